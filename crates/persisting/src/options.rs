//! Backend options, with the seed's names and defaults, constructible from a string or
//! JSON map (`backend_options`). Unknown keys are ignored with a warning, as the seed
//! says; a known key with a bad value is an error naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use persisting_compress::Codec;
use serde_json::Value as Json;

use crate::error::{Result, StorageError};

/// Options of a [`crate::PersistingBackend`] (a [`crate::LanceBackend`] uses the first
/// two).
#[derive(Debug, Clone, PartialEq)]
pub struct PersistingOptions {
    /// Records per read when streaming (default 100).
    pub batch_size: usize,
    /// Buffered records that trigger a flush (default 1000).
    pub flush_threshold: usize,
    /// Write every record to the WAL before acknowledging it (default false).
    pub enable_wal: bool,
    /// Compression of WAL payloads and (zstd, lz4) of Lance columns (default none).
    pub compression: Codec,
    /// Record metrics through the `metrics` facade (default false).
    pub enable_metrics: bool,
    /// WAL fsync interval; zero fsyncs before each put returns (default 1 s).
    pub wal_sync_interval: Duration,
    /// WAL size that triggers a flush and checkpoint, in bytes (default 100 MiB).
    pub max_wal_size: u64,
    /// Rows per Lance fragment that compaction aims for (default 1,048,576; at least
    /// 32). Fragments below a thirty-second of it are small: more than 64 of them are
    /// compacted. A flush of at least twice that many records writes its data files in
    /// parts at once, one per core.
    pub target_rows_per_fragment: usize,
    /// The `topic` label of this bucket's metrics (the queue sets it; default
    /// `"default"`). Not an option of the string map.
    pub metrics_topic: String,
    /// The local directory of the bucket's WAL (`{wal_dir}/wal`) and lock file
    /// (`{wal_dir}/LOCK`): by default the storage path itself. Required when the data
    /// is at a URI (`s3://…`), which has no local directory; for a queue, the root
    /// under which each bucket's directory takes the same relative path as its data.
    pub wal_dir: Option<PathBuf>,
    /// Options of the object store holding data at a URI (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, …, as pylance names them). In the string
    /// map: `storage_options` as a map, or one `storage_options.KEY` per key.
    pub storage_options: BTreeMap<String, String>,
    /// Term of the writer's lease on data at a URI (default 30 s; see
    /// `persisting_lance::LanceOptions::lease_term`). In the string map: seconds.
    pub lease_term: Duration,
    /// A flush is also due once the oldest unflushed record has waited this long
    /// (default none; in the string map, seconds, 0 for none), checked after each put
    /// and by a timer while records wait: the pacing of a bucket at a URI.
    pub flush_interval: Option<Duration>,
    /// Encoded bytes of records not committed to Lance yet at which puts wait for room
    /// (default 256 MiB; at least 4096): what a bucket holds in memory, and in its WAL,
    /// while its store is slow or away. A flush is due once half of it waits.
    pub max_unflushed_bytes: u64,
    /// How long a put waits for room at `max_unflushed_bytes` (or `max_wal_size`)
    /// before it fails, storing nothing (default 60 s; in the string map, seconds).
    pub put_timeout: Duration,
    /// Retention keeps at least the last this many records (default: off).
    pub retention_records: Option<u64>,
    /// Retention keeps at most about this many bytes of data files (default: off).
    pub retention_bytes: Option<u64>,
    /// Retention removes records written longer ago than this (default: off).
    pub retention_age: Option<Duration>,
    /// Retention removes records consumer groups have not committed past too
    /// (default false: a group's records stay until it commits past them).
    pub retention_ignores_groups: bool,
    /// Dataset versions older than this are removed after a trim or a compaction,
    /// with the files only they need (default 600 s): what a trim removes frees its
    /// space once its versions are this old. Snapshots keep theirs.
    pub version_retention: Duration,
}

impl Default for PersistingOptions {
    fn default() -> Self {
        Self {
            batch_size: 100,
            flush_threshold: 1000,
            enable_wal: false,
            compression: Codec::None,
            enable_metrics: false,
            wal_sync_interval: Duration::from_secs(1),
            max_wal_size: 100 * 1024 * 1024,
            target_rows_per_fragment: 1 << 20,
            metrics_topic: "default".to_owned(),
            wal_dir: None,
            storage_options: BTreeMap::new(),
            lease_term: Duration::from_secs(30),
            flush_interval: None,
            max_unflushed_bytes: 256 * 1024 * 1024,
            put_timeout: Duration::from_secs(60),
            retention_records: None,
            retention_bytes: None,
            retention_age: None,
            retention_ignores_groups: false,
            version_retention: Duration::from_secs(600),
        }
    }
}

/// The option keys this crate knows.
pub const KNOWN_OPTIONS: [&str; 19] = [
    "batch_size",
    "flush_threshold",
    "enable_wal",
    "compression",
    "enable_metrics",
    "wal_sync_interval",
    "max_wal_size",
    "target_rows_per_fragment",
    "wal_dir",
    "storage_options",
    "lease_term",
    "flush_interval",
    "max_unflushed_bytes",
    "put_timeout",
    "retention_records",
    "retention_bytes",
    "retention_age",
    "retention_ignores_groups",
    "version_retention",
];

fn as_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn count(name: &str, v: &Json, min: u64) -> Result<u64> {
    let n = match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= min => Ok(n),
        _ => Err(StorageError::invalid(
            name,
            as_text(v),
            format!("must be a whole number of at least {min}"),
        )),
    }
}

fn flag(name: &str, v: &Json) -> Result<bool> {
    match v {
        Json::Bool(b) => Ok(*b),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(StorageError::invalid(name, s, "must be true or false")),
        },
        other => Err(StorageError::invalid(
            name,
            as_text(other),
            "must be true or false",
        )),
    }
}

/// A number of seconds from `min` up to a day.
fn seconds(name: &str, v: &Json, min: f64, what: &str) -> Result<Duration> {
    let secs = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && (min..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(StorageError::invalid(
            name,
            as_text(v),
            format!("must be {what}"),
        )),
    }
}

/// Sets the storage option `key` (given as `storage_options.KEY` or inside a
/// `storage_options` map).
/// The longest a retention may be: ten years.
const LONG_SECONDS_MAX: f64 = 10.0 * 365.0 * 86_400.0;

/// A duration of seconds up to ten years (`retention_age` must be above 0).
fn long_seconds(name: &str, v: &Json, what: &str) -> Result<Duration> {
    let secs = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let positive = name == "retention_age";
    match secs {
        Some(s) if (0.0..=LONG_SECONDS_MAX).contains(&s) && (s > 0.0 || !positive) => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(StorageError::invalid(
            name,
            as_text(v),
            format!("must be {what}, at most ten years ({LONG_SECONDS_MAX} s)"),
        )),
    }
}

fn storage_option(opts: &mut PersistingOptions, key: &str, v: &Json) -> Result<()> {
    let name = format!("storage_options.{key}");
    if key.trim().is_empty() {
        return Err(StorageError::invalid(
            &name,
            as_text(v),
            "needs a key after the dot",
        ));
    }
    match v {
        Json::String(_) | Json::Number(_) | Json::Bool(_) => {
            opts.storage_options
                .insert(key.trim().to_owned(), as_text(v).trim().to_owned());
            Ok(())
        }
        other => Err(StorageError::invalid(
            &name,
            as_text(other),
            "must be a string, number or boolean",
        )),
    }
}

impl PersistingOptions {
    /// Builds options from a map of option names to JSON values (strings are parsed,
    /// so `{"enable_wal": "true"}` works). Returns the options and the unknown keys,
    /// which are ignored (and reported on stderr).
    ///
    /// ```
    /// use persisting::PersistingOptions;
    /// let map = serde_json::json!({"enable_wal": true, "wal_sync_interval": 0.1, "colour": "blue"});
    /// let (opts, ignored) = PersistingOptions::from_map(map.as_object().unwrap()).unwrap();
    /// assert!(opts.enable_wal);
    /// assert_eq!(ignored, ["colour"]);
    /// let bad = serde_json::json!({"compression": "gzip"});
    /// assert!(PersistingOptions::from_map(bad.as_object().unwrap()).unwrap_err().to_string().contains("compression"));
    /// ```
    pub fn from_map(map: &serde_json::Map<String, Json>) -> Result<(Self, Vec<String>)> {
        let mut opts = Self::default();
        let mut ignored = Vec::new();
        for (key, v) in map {
            match key.as_str() {
                "batch_size" => opts.batch_size = count(key, v, 1)? as usize,
                "flush_threshold" => opts.flush_threshold = count(key, v, 1)? as usize,
                "enable_wal" => opts.enable_wal = flag(key, v)?,
                "enable_metrics" => opts.enable_metrics = flag(key, v)?,
                "max_wal_size" => opts.max_wal_size = count(key, v, 4096)?,
                "max_unflushed_bytes" => opts.max_unflushed_bytes = count(key, v, 4096)?,
                "put_timeout" => {
                    opts.put_timeout = seconds(key, v, 0.0, "a number of seconds from 0 to 86400")?;
                }
                "retention_records" => {
                    opts.retention_records =
                        (!v.is_null()).then(|| count(key, v, 1)).transpose()?;
                }
                "retention_bytes" => {
                    opts.retention_bytes = (!v.is_null()).then(|| count(key, v, 1)).transpose()?;
                }
                "retention_age" => {
                    opts.retention_age = (!v.is_null())
                        .then(|| long_seconds(key, v, "a number of seconds above 0"))
                        .transpose()?;
                }
                "retention_ignores_groups" => opts.retention_ignores_groups = flag(key, v)?,
                "version_retention" => {
                    opts.version_retention = long_seconds(key, v, "a number of seconds from 0")?;
                }
                "target_rows_per_fragment" => {
                    opts.target_rows_per_fragment = count(key, v, 32)? as usize;
                }
                "compression" => {
                    opts.compression = match v {
                        Json::Null => Codec::None,
                        v => as_text(v)
                            .parse()
                            .map_err(|e: persisting_compress::Error| {
                                StorageError::invalid(key, as_text(v), e)
                            })?,
                    }
                }
                "flush_interval" => {
                    let t = match v {
                        Json::Null => Duration::ZERO,
                        v => seconds(key, v, 0.0, "a number of seconds from 0 (none) to 86400")?,
                    };
                    opts.flush_interval = (!t.is_zero()).then_some(t);
                }
                "lease_term" => {
                    opts.lease_term =
                        seconds(key, v, 0.01, "a number of seconds of at least 0.01")?;
                }
                "wal_sync_interval" => {
                    opts.wal_sync_interval =
                        seconds(key, v, 0.0, "a number of seconds from 0 to 86400")?;
                }
                "wal_dir" => match v {
                    Json::Null => opts.wal_dir = None,
                    Json::String(s) if !s.trim().is_empty() => {
                        opts.wal_dir = Some(PathBuf::from(s.trim()));
                    }
                    other => {
                        return Err(StorageError::invalid(
                            key,
                            as_text(other),
                            "must be the path of a local directory",
                        ));
                    }
                },
                "storage_options" => match v {
                    Json::Object(entries) => {
                        for (k, v) in entries {
                            storage_option(&mut opts, k, v)?;
                        }
                    }
                    other => {
                        return Err(StorageError::invalid(
                            key,
                            as_text(other),
                            "must be a map of option names to strings",
                        ));
                    }
                },
                other => match other.strip_prefix("storage_options.") {
                    Some(k) => storage_option(&mut opts, k, v)?,
                    None => ignored.push(other.to_owned()),
                },
            }
        }
        for key in &ignored {
            eprintln!("persisting: ignoring unknown backend option {key:?}");
        }
        Ok((opts, ignored))
    }

    /// Builds options from `key=value` strings (the command line's `--option`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<(Self, Vec<String>)> {
        let mut map = serde_json::Map::new();
        for pair in pairs {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                StorageError::invalid("option", pair, "must be written key=value")
            })?;
            map.insert(k.trim().to_owned(), Json::String(v.trim().to_owned()));
        }
        Self::from_map(&map)
    }
}

//! Backend options, with the seed's names and defaults, constructible from a string or
//! JSON map (`backend_options`). Unknown keys are ignored with a warning, as the seed
//! says; a known key with a bad value is an error naming it.
//!
//! One path from every caller to Lance: Python hands its keyword arguments over as
//! a map, the command line its `-o key=value` pairs ([`PersistingOptions::from_pairs`]),
//! both parsed here ([`PersistingOptions::from_map`]); the options Lance uses convert
//! in one place ([`PersistingOptions::lance_options`]), take their defaults from
//! [`LanceOptions::default`] and are checked by [`LanceOptions::validate`] alone,
//! when parsed and again when a bucket opens. The Python package takes its
//! signatures' defaults from [`PersistingOptions::to_map`] of the default.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use persisting_compress::Codec;
use persisting_lance::{ColumnCompression, LanceOptions, Retention};
use serde_json::Value as Json;

use crate::error::{Result, StorageError};

/// Options of a [`crate::PersistingBackend`] (a [`crate::LanceBackend`] uses the first
/// two).
#[derive(Debug, Clone, PartialEq)]
pub struct PersistingOptions {
    /// Records per read when streaming (default 100).
    pub batch_size: usize,
    /// Buffered records that trigger a flush (default 1000; 0: none by count, only
    /// by `flush_interval`, half of `max_unflushed_bytes`, `max_wal_size` or an
    /// explicit flush).
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
    pub storage_options: HashMap<String, String>,
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
    /// The facade's own defaults, and the Lance layer's for the options it shares.
    fn default() -> Self {
        let lance = LanceOptions::default();
        Self {
            batch_size: 100,
            flush_threshold: lance.flush_threshold,
            enable_wal: false,
            compression: Codec::None,
            enable_metrics: false,
            wal_sync_interval: Duration::from_secs(1),
            max_wal_size: 100 * 1024 * 1024,
            target_rows_per_fragment: lance.target_rows_per_fragment,
            metrics_topic: "default".to_owned(),
            wal_dir: None,
            storage_options: lance.storage_options,
            lease_term: lance.lease_term,
            flush_interval: lance.flush_interval,
            max_unflushed_bytes: 256 * 1024 * 1024,
            put_timeout: Duration::from_secs(60),
            retention_records: lance.retention.records,
            retention_bytes: lance.retention.bytes,
            retention_age: lance.retention.age,
            retention_ignores_groups: lance.retention.ignores_groups,
            version_retention: lance.version_retention,
        }
    }
}

/// The option keys [`PersistingOptions::from_map`] takes (besides
/// `storage_options.KEY`): the keys of [`PersistingOptions::to_map`], in its order.
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

/// The least `batch_size`.
pub const BATCH_SIZE_MIN: u64 = 1;

/// The least `max_wal_size` and `max_unflushed_bytes`, in bytes.
pub const BOUND_BYTES_MIN: u64 = 4096;

/// The least `retention_records` and `retention_bytes` (when set).
pub const RETENTION_MIN: u64 = 1;

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
        _ => Err(below(name, as_text(v), min)),
    }
}

/// The error of a count option `name` given as `value`, which is not a whole number
/// of at least `min`.
fn below(name: &str, value: impl ToString, min: u64) -> StorageError {
    StorageError::invalid(
        name,
        value,
        format!("must be a whole number of at least {min}"),
    )
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
    // an empty key is refused with the other bounds (`LanceOptions::validate`)
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
                "batch_size" => opts.batch_size = count(key, v, BATCH_SIZE_MIN)? as usize,
                "flush_threshold" => opts.flush_threshold = count(key, v, 0)? as usize,
                "enable_wal" => opts.enable_wal = flag(key, v)?,
                "enable_metrics" => opts.enable_metrics = flag(key, v)?,
                "max_wal_size" => opts.max_wal_size = count(key, v, BOUND_BYTES_MIN)?,
                "max_unflushed_bytes" => {
                    opts.max_unflushed_bytes = count(key, v, BOUND_BYTES_MIN)?;
                }
                "put_timeout" => {
                    opts.put_timeout = seconds(key, v, 0.0, "a number of seconds from 0 to 86400")?;
                }
                "retention_records" => {
                    opts.retention_records = (!v.is_null())
                        .then(|| count(key, v, RETENTION_MIN))
                        .transpose()?;
                }
                "retention_bytes" => {
                    opts.retention_bytes = (!v.is_null())
                        .then(|| count(key, v, RETENTION_MIN))
                        .transpose()?;
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
                    opts.target_rows_per_fragment = count(key, v, 0)? as usize;
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
                    opts.lease_term = seconds(key, v, 0.0, "a number of seconds")?;
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
        opts.validate()?;
        for key in &ignored {
            log::warn!("ignoring unknown backend option {key:?}");
        }
        Ok((opts, ignored))
    }

    /// Checks the options against their bounds, as [`PersistingOptions::from_map`] does
    /// while parsing: what [`crate::PersistingBackend::open`] checks of options built
    /// in Rust. The facade's own bounds are the `*_MIN` constants of this module; the
    /// bounds of the options Lance uses are in `LanceOptions::validate`, their one
    /// place.
    pub fn validate(&self) -> Result<()> {
        let at_least = |name: &str, value: u64, min: u64| {
            if value < min {
                return Err(below(name, value, min));
            }
            Ok(())
        };
        at_least("batch_size", self.batch_size as u64, BATCH_SIZE_MIN)?;
        at_least("max_wal_size", self.max_wal_size, BOUND_BYTES_MIN)?;
        at_least(
            "max_unflushed_bytes",
            self.max_unflushed_bytes,
            BOUND_BYTES_MIN,
        )?;
        if let Some(n) = self.retention_records {
            at_least("retention_records", n, RETENTION_MIN)?;
        }
        if let Some(n) = self.retention_bytes {
            at_least("retention_bytes", n, RETENTION_MIN)?;
        }
        if self.retention_age.is_some_and(|a| a.is_zero()) {
            return Err(StorageError::invalid(
                "retention_age",
                0,
                "must be a number of seconds above 0 (None: off)",
            ));
        }
        self.lance_options(None).validate()?;
        Ok(())
    }

    /// The map [`PersistingOptions::from_map`] reads back into these options (its
    /// units: seconds, bytes; absent values as `null`), keyed by [`KNOWN_OPTIONS`].
    /// The Python package takes its defaults from that of the default options.
    pub fn to_map(&self) -> serde_json::Map<String, Json> {
        let secs = |d: Duration| Json::from(d.as_secs_f64());
        let opt_secs = |d: Option<Duration>| d.map_or(Json::Null, secs);
        let compression = match self.compression {
            Codec::None => Json::Null,
            c => Json::from(c.to_string()),
        };
        let values: [Json; KNOWN_OPTIONS.len()] = [
            self.batch_size.into(),
            self.flush_threshold.into(),
            self.enable_wal.into(),
            compression,
            self.enable_metrics.into(),
            secs(self.wal_sync_interval),
            self.max_wal_size.into(),
            self.target_rows_per_fragment.into(),
            self.wal_dir
                .as_ref()
                .map_or(Json::Null, |d| d.to_string_lossy().into()),
            Json::Object(
                self.storage_options
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::from(v.clone())))
                    .collect(),
            ),
            secs(self.lease_term),
            opt_secs(self.flush_interval),
            self.max_unflushed_bytes.into(),
            secs(self.put_timeout),
            self.retention_records.map_or(Json::Null, Json::from),
            self.retention_bytes.map_or(Json::Null, Json::from),
            opt_secs(self.retention_age),
            self.retention_ignores_groups.into(),
            secs(self.version_retention),
        ];
        KNOWN_OPTIONS
            .iter()
            .map(|k| (*k).to_owned())
            .zip(values)
            .collect()
    }

    /// The options of the bucket's Lance layer: the one conversion. `writer_id`: the
    /// name its writer holds a lease under (data at a URI).
    pub fn lance_options(&self, writer_id: Option<String>) -> LanceOptions {
        LanceOptions {
            // the bucket's one flush policy (`LanceBucket::flush_due`) decides, asked
            // by the facade after each put
            flush_threshold: self.flush_threshold,
            column_compression: column_compression(self.compression),
            target_rows_per_fragment: self.target_rows_per_fragment,
            storage_options: self.storage_options.clone(),
            lease_term: self.lease_term,
            writer_id,
            flush_interval: self.flush_interval,
            version_retention: self.version_retention,
            retention: Retention {
                records: self.retention_records,
                bytes: self.retention_bytes,
                age: self.retention_age,
                ignores_groups: self.retention_ignores_groups,
            },
            ..LanceOptions::default()
        }
    }

    /// Builds options from `key=value` strings (the command line's `--option`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<(Self, Vec<String>)> {
        Self::from_map(&Self::map_of_pairs(pairs)?)
    }

    /// The map of `key=value` strings (values stay strings, which
    /// [`PersistingOptions::from_map`] parses): what a queue's `backend_options` hold
    /// when given on the command line.
    pub fn map_of_pairs<'a>(
        pairs: impl IntoIterator<Item = &'a str>,
    ) -> Result<serde_json::Map<String, Json>> {
        let mut map = serde_json::Map::new();
        for pair in pairs {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                StorageError::invalid("option", pair, "must be written key=value")
            })?;
            map.insert(k.trim().to_owned(), Json::String(v.trim().to_owned()));
        }
        Ok(map)
    }
}

/// Lance's column compression for a codec (snappy applies to the WAL only).
fn column_compression(codec: Codec) -> ColumnCompression {
    match codec {
        Codec::Zstd { level } => ColumnCompression::Zstd(Some(level)),
        Codec::Lz4 => ColumnCompression::Lz4,
        Codec::None | Codec::Snappy => ColumnCompression::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_built_in_rust_are_held_to_the_bounds_of_the_map() {
        assert!(PersistingOptions::default().validate().is_ok());
        let cases = [
            (
                "batch_size",
                PersistingOptions {
                    batch_size: 0,
                    ..PersistingOptions::default()
                },
            ),
            (
                "max_wal_size",
                PersistingOptions {
                    max_wal_size: BOUND_BYTES_MIN - 1,
                    ..PersistingOptions::default()
                },
            ),
            (
                "max_unflushed_bytes",
                PersistingOptions {
                    max_unflushed_bytes: 10,
                    ..PersistingOptions::default()
                },
            ),
            (
                "retention_records",
                PersistingOptions {
                    retention_records: Some(0),
                    ..PersistingOptions::default()
                },
            ),
            (
                "retention_age",
                PersistingOptions {
                    retention_age: Some(Duration::ZERO),
                    ..PersistingOptions::default()
                },
            ),
            (
                "target_rows_per_fragment",
                PersistingOptions {
                    target_rows_per_fragment: 1,
                    ..PersistingOptions::default()
                },
            ),
        ];
        for (name, opts) in cases {
            let e = opts.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
            // the map refuses the same value, naming the same option
            let mut map = PersistingOptions::default().to_map();
            map.extend(opts.to_map().into_iter().filter(|(k, _)| k == name));
            let e = PersistingOptions::from_map(&map).unwrap_err().to_string();
            assert!(e.contains(name), "{name} from the map: {e}");
        }
    }

    #[test]
    fn the_map_of_options_reads_back_into_them() {
        let defaults = PersistingOptions::default();
        let map = defaults.to_map();
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, KNOWN_OPTIONS);
        assert_eq!(PersistingOptions::from_map(&map).unwrap().0, defaults);
        let changed = PersistingOptions {
            batch_size: 7,
            flush_threshold: 0,
            enable_wal: true,
            compression: Codec::Zstd { level: 9 },
            wal_sync_interval: Duration::from_millis(50),
            wal_dir: Some(PathBuf::from("/tmp/w")),
            storage_options: [("aws_region".to_owned(), "x".to_owned())].into(),
            lease_term: Duration::from_secs(5),
            flush_interval: Some(Duration::from_millis(250)),
            retention_records: Some(10),
            retention_age: Some(Duration::from_secs(3600)),
            retention_ignores_groups: true,
            ..defaults
        };
        let (back, ignored) = PersistingOptions::from_map(&changed.to_map()).unwrap();
        assert_eq!(back, changed);
        assert!(ignored.is_empty());
    }

    #[test]
    fn lance_bounds_are_checked_when_parsed() {
        for (key, value, says) in [
            ("lease_term", "0.001", "at least 0.01 s"),
            ("target_rows_per_fragment", "31", "at least 32"),
            ("storage_options. ", "x", "keys must not be empty"),
        ] {
            let err =
                PersistingOptions::from_pairs([format!("{key}={value}").as_str()]).unwrap_err();
            assert!(err.is_invalid_option(), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(key.trim_end_matches(". ")) && text.contains(says),
                "{text}"
            );
        }
        // 0: no flush by count (flushes by bytes, interval, WAL size or on demand)
        let (opts, _) = PersistingOptions::from_pairs(["flush_threshold=0"]).unwrap();
        assert_eq!(opts.lance_options(None).flush_threshold, 0);
    }
}

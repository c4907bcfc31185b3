//! Opening what a command's PATH names: one bucket, or a topic's buckets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use persisting::lance::{DATASET_DIR, LanceBucket, LanceOptions, Location, list_dirs};
use persisting::{
    BackendStats, BucketError, BucketGroups, BucketSpec, PersistingBackend, PersistingOptions,
    QueueOptions, QueueSystem, QueueWriter, Record, Registry, StorageBackend, StorageError,
    WAL_DIR, bucket_dir_name,
};

use crate::CliResult;

/// Where a command reads or writes, and with which backend.
#[derive(Args, Debug)]
pub struct BackendArgs {
    /// A bucket's storage directory; a topic's directory (one holding bucket_0,
    /// bucket_1, ...: what Pulsing writes for a queue given a storage_path); or with
    /// --topic the root of topics.
    pub path: PathBuf,
    /// Treat PATH as a root of topics and work on {PATH}/{TOPIC}/bucket_{id} (Pulsing's
    /// layout for a queue without a storage_path of its own).
    #[arg(long)]
    pub topic: Option<String>,
    /// Backend: persisting, lance or memory.
    #[arg(long, default_value = "persisting")]
    pub backend: String,
    /// A backend option, key=value (repeatable): enable_wal, compression,
    /// wal_sync_interval, max_wal_size, flush_threshold, batch_size, enable_metrics,
    /// target_rows_per_fragment, flush_interval; for a PATH that is an object-store
    /// URI: wal_dir (required; with --topic T each bucket's WAL is in
    /// {wal_dir}/{T}/bucket_{id}), storage_options.KEY, lease_term.
    #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Buckets of the topic (default: as many as exist, else 4).
    #[arg(long)]
    pub buckets: Option<u32>,
    /// Field whose value picks a record's bucket in a topic.
    #[arg(long, default_value = "id")]
    pub bucket_column: String,
}

/// An opened bucket or topic.
pub enum Opened {
    /// A bucket this process holds (its lock taken, its WAL replayed).
    Bucket(Arc<dyn StorageBackend>),
    /// Buckets another process writes (one, or a topic's): their committed Lance
    /// data, read-only.
    ReadOnly(Vec<LanceBucket>),
    /// A topic's buckets (written by bucket column).
    Topic(Box<QueueWriter>),
}

fn options_map(
    args: &BackendArgs,
    wal_present: bool,
    metrics: bool,
) -> CliResult<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    if wal_present {
        // a bucket written with a WAL must be opened with it, or its unflushed
        // records would be invisible
        map.insert("enable_wal".into(), true.into());
    }
    if metrics {
        map.insert("enable_metrics".into(), true.into());
    }
    map.extend(
        PersistingOptions::map_of_pairs(args.options.iter().map(String::as_str))
            .map_err(|e| e.to_string())?,
    );
    // check them now, so a bad value is reported before anything is opened
    PersistingOptions::from_map(&map).map_err(|e| e.to_string())?;
    Ok(map)
}

fn bucket_id_of(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("bucket_"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The `bucket_*` directories of a local topic directory.
fn local_buckets(topic_dir: &Path) -> u32 {
    std::fs::read_dir(topic_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("bucket_"))
                .count() as u32
        })
        .unwrap_or(0)
}

fn read_only_check(dir: &Location) -> CliResult {
    // data at a URI: whether it is there is for the open to find out
    let Location::Local(dir) = dir else {
        return Ok(());
    };
    if !dir.join(DATASET_DIR).exists() && !dir.join(WAL_DIR).is_dir() {
        return Err(format!(
            "no bucket at {} (neither {DATASET_DIR} nor {WAL_DIR} in it)",
            dir.display()
        ));
    }
    Ok(())
}

/// Opens a bucket's committed Lance data without taking its lock (or a lease).
pub async fn read_only(dir: &Location, opts: &LanceOptions) -> CliResult<LanceBucket> {
    read_only_check(dir)?;
    LanceBucket::open(dir.to_path_buf(), opts.clone())
        .await
        .map_err(|e| e.to_string())
}

/// A topic PATH names: its name (for metrics labels) and its directory.
struct TopicAt {
    name: String,
    dir: Location,
    /// The local directory of its buckets' WALs: `dir`, or for a topic at a URI the
    /// `wal_dir` option (with `--topic T`, `{wal_dir}/{T}`: a root of topics as PATH
    /// is); `None` at a URI without `wal_dir`.
    local: Option<PathBuf>,
}

impl BackendArgs {
    /// The topic PATH names, if it names one: `--topic T` is `{PATH}/{T}`, and a PATH
    /// holding `bucket_0` is itself a topic's directory.
    fn topic_at(&self) -> CliResult<Option<TopicAt>> {
        match &self.topic {
            Some(t) => {
                let dir = QueueOptions::new(&self.path)
                    .topic_dir(t)
                    .map_err(|e| e.to_string())?;
                let dir = Location::of(dir).map_err(|e| e.to_string())?;
                let local = match &dir {
                    Location::Remote(_) => self.wal_dir()?.map(|w| w.join(t)),
                    Location::Local(dir) => Some(dir.clone()),
                };
                Ok(Some(TopicAt {
                    name: t.clone(),
                    dir,
                    local,
                }))
            }
            None if self.path.join(bucket_dir_name(0)).is_dir() => {
                let name = self
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .filter(|n| persisting::validate_topic(n).is_ok())
                    .unwrap_or_else(|| "topic".to_owned());
                Ok(Some(TopicAt {
                    name,
                    dir: Location::Local(self.path.clone()),
                    local: Some(self.path.clone()),
                }))
            }
            None => Ok(None),
        }
    }

    /// Where PATH is, decided once.
    fn location(&self) -> CliResult<Location> {
        Location::of(&self.path).map_err(|e| e.to_string())
    }

    /// The options given with `-o`, checked.
    fn options(&self) -> CliResult<PersistingOptions> {
        let map = options_map(self, false, false)?;
        let (opts, _) = PersistingOptions::from_map(&map).map_err(|e| e.to_string())?;
        Ok(opts)
    }

    /// The `wal_dir` option, if given.
    fn wal_dir(&self) -> CliResult<Option<PathBuf>> {
        Ok(self.options()?.wal_dir)
    }

    /// The options of a bucket's Lance layer the `-o` options make (for reads
    /// without the writer: its storage options and bounds).
    pub fn lance_options(&self) -> CliResult<LanceOptions> {
        Ok(self.options()?.lance_options(None))
    }

    /// The storage options given with `-o storage_options.KEY=VALUE`.
    pub fn storage_options(&self) -> CliResult<HashMap<String, String>> {
        Ok(self.options()?.storage_options.into_iter().collect())
    }

    /// The buckets a topic has: its `bucket_*` directories, locally, or at a URI
    /// those on the object store and those with a WAL under its local directory (a
    /// bucket whose records were never flushed has nothing on the object store yet).
    async fn existing_buckets(&self, topic: &TopicAt) -> CliResult<u32> {
        let local = topic.local.as_deref().map_or(0, local_buckets);
        let Location::Remote(uri) = &topic.dir else {
            return Ok(local);
        };
        let remote = list_dirs(uri.as_str(), &self.storage_options()?)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|n| n.starts_with("bucket_"))
            .count() as u32;
        Ok(remote.max(local))
    }

    /// The consumer groups of each bucket PATH names, with its id, opened without the
    /// writer's lock (a bucket another process writes works too).
    pub async fn standalone_groups(&self) -> CliResult<Vec<(u64, BucketGroups)>> {
        let storage_options = self.storage_options()?;
        let wal_root = self.wal_dir()?;
        let topic = self.topic_at()?;
        let mut out = Vec::new();
        for dir in self.bucket_dirs().await? {
            // the bucket's local directory (its WAL), where its data is at a URI
            let local = match (&dir, &topic, &wal_root) {
                (Location::Local(_), _, _) => None,
                (Location::Remote(_), Some(t), _) => t
                    .local
                    .as_ref()
                    .zip(dir.file_name())
                    .map(|(l, name)| l.join(name)),
                (Location::Remote(_), None, w) => w.clone(),
            };
            let groups = BucketGroups::open(dir.to_path_buf(), local.as_deref(), &storage_options)
                .await
                .map_err(|e| e.to_string())?;
            out.push((bucket_id_of(&dir.to_path_buf()), groups));
        }
        Ok(out)
    }

    /// The bucket directories PATH names (one, or every bucket of the topic).
    pub async fn bucket_dirs(&self) -> CliResult<Vec<Location>> {
        let Some(topic) = self.topic_at()? else {
            return Ok(vec![self.location()?]);
        };
        let n = self.existing_buckets(&topic).await?;
        if n == 0 {
            return Err(format!(
                "no topic {:?}: no bucket directories in {}",
                topic.name, topic.dir
            ));
        }
        Ok((0..n)
            .map(|b| topic.dir.join(&bucket_dir_name(b)))
            .collect())
    }

    async fn open_topic(
        &self,
        topic: TopicAt,
        metrics: bool,
        must_exist: bool,
    ) -> CliResult<Opened> {
        let existing = self.existing_buckets(&topic).await?;
        let TopicAt {
            name: topic,
            dir: topic_dir,
            local,
        } = topic;
        if must_exist && existing == 0 {
            return Err(format!(
                "no topic {topic:?}: no bucket directories in {topic_dir}"
            ));
        }
        let wal_present = local.as_ref().is_some_and(|local| {
            (0..existing).any(|b| local.join(bucket_dir_name(b)).join(WAL_DIR).is_dir())
        });
        let mut backend_options = options_map(self, wal_present, metrics)?;
        if let (Some(local), true) = (&local, topic_dir.is_remote()) {
            // each bucket's WAL at {local}/bucket_{id}, as its data at {topic_dir}/bucket_{id}
            backend_options.insert("wal_dir".into(), local.to_string_lossy().as_ref().into());
        }
        let num_buckets = match self.buckets {
            Some(n) if existing > 0 && n != existing => {
                return Err(format!(
                    "--buckets {n}, but topic {topic:?} has {existing} buckets: records would land in other buckets"
                ));
            }
            Some(n) => n,
            None if existing > 0 => existing,
            None => 4,
        };
        let opts = QueueOptions {
            backend: self.backend.clone(),
            num_buckets,
            bucket_column: self.bucket_column.clone(),
            backend_options,
            ..QueueOptions::at(topic_dir.to_path_buf())
        };
        let system = QueueSystem::new();
        let writer = system
            .write_queue(&topic, opts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Opened::Topic(Box::new(writer)))
    }

    async fn open_bucket(&self, metrics: bool) -> CliResult<Arc<dyn StorageBackend>> {
        let mut options = options_map(self, false, metrics)?;
        // the bucket's local directory: `-o wal_dir=DIR` (data at a URI), else its path
        let local = match options.get("wal_dir").and_then(|v| v.as_str()) {
            Some(dir) => PathBuf::from(dir),
            None => self.path.clone(),
        };
        if local.join(WAL_DIR).is_dir() {
            // as `options_map` does: a bucket written with a WAL opens with it, unless
            // the command line says otherwise
            options.entry("enable_wal").or_insert(true.into());
        }
        let factory = Registry::new()
            .get(&self.backend)
            .map_err(|e| e.to_string())?;
        factory(BucketSpec {
            bucket_id: bucket_id_of(&self.path),
            storage_path: self.path.clone(),
            relative_path: PathBuf::new(),
            options,
            topic: "cli".to_owned(),
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Opens for writing (creating the bucket or topic if needed).
    pub async fn open_for_write(&self, metrics: bool) -> CliResult<Opened> {
        match self.topic_at()? {
            Some(t) => self.open_topic(t, metrics, false).await,
            None => Ok(Opened::Bucket(self.open_bucket(metrics).await?)),
        }
    }

    /// Opens an existing bucket or topic for reading. A bucket another process holds
    /// is read from its committed Lance data.
    pub async fn open_for_read(&self, metrics: bool) -> CliResult<Opened> {
        let opened = match self.topic_at()? {
            Some(t) => self.open_topic(t, metrics, true).await,
            None => {
                read_only_check(&self.location()?)?;
                self.open_bucket(metrics).await.map(Opened::Bucket)
            }
        };
        match opened {
            // a local bucket's lock, or the lease of one at a URI
            Err(e) if e.contains("is open in another handle or process") || e.contains("lease") => {
                eprintln!(
                    "note: {} is open for writing elsewhere; showing what it has committed to Lance",
                    self.path.display()
                );
                let mut buckets = Vec::new();
                let opts = self.lance_options()?;
                for dir in self.bucket_dirs().await? {
                    buckets.push(read_only(&dir, &opts).await?);
                }
                Ok(Opened::ReadOnly(buckets))
            }
            other => other,
        }
    }
}

/// What `read(bucket, n)` gives of each bucket in turn, until `limit` records in all.
async fn from_each<T, F, Fut>(
    buckets: impl IntoIterator<Item = T>,
    limit: usize,
    mut read: F,
) -> CliResult<Vec<Record>>
where
    F: FnMut(T, usize) -> Fut,
    Fut: std::future::Future<Output = CliResult<Vec<Record>>>,
{
    let mut out = Vec::new();
    for bucket in buckets {
        if out.len() >= limit {
            break;
        }
        out.extend(read(bucket, limit - out.len()).await?);
    }
    Ok(out)
}

impl Opened {
    /// The consumer groups of each opened bucket, in bucket order: those of the
    /// backends this process holds, else opened beside the read-only data.
    pub async fn groups(&self, args: &BackendArgs) -> CliResult<Vec<BucketGroups>> {
        let held = |b: &Arc<dyn StorageBackend>| b.consumer_groups().map_err(|e| e.to_string());
        match self {
            Opened::Bucket(b) => Ok(vec![held(b)?]),
            Opened::Topic(writer) => writer.buckets().iter().map(held).collect(),
            Opened::ReadOnly(_) => Ok(args
                .standalone_groups()
                .await?
                .into_iter()
                .map(|(_, g)| g)
                .collect()),
        }
    }

    /// Records `[offset, offset + limit)` of the `index`-th opened bucket.
    pub async fn get_bucket(
        &self,
        index: usize,
        offset: u64,
        limit: usize,
    ) -> CliResult<Vec<Record>> {
        let failed = |e: &dyn std::fmt::Display| e.to_string();
        match self {
            Opened::Bucket(b) if index == 0 => {
                b.get(offset, Some(limit)).await.map_err(|e| failed(&e))
            }
            Opened::ReadOnly(buckets) if index < buckets.len() => buckets[index]
                .read(offset, limit)
                .await
                .map_err(|e| failed(&e)),
            Opened::Topic(writer) if index < writer.buckets().len() => writer.buckets()[index]
                .get(offset, Some(limit))
                .await
                .map_err(|e| failed(&e)),
            _ => Err(format!("no bucket {index} here")),
        }
    }

    pub async fn put_batch(&self, records: Vec<Record>) -> Result<(), StorageError> {
        match self {
            Opened::Bucket(b) => b.put_batch(records).await,
            Opened::Topic(writer) => writer.put_batch(records).await,
            Opened::ReadOnly(buckets) => Err(BucketError::ReadOnly {
                path: buckets
                    .first()
                    .map_or_else(PathBuf::new, |b| b.storage_path().to_path_buf()),
            }
            .into()),
        }
    }

    pub async fn get(&self, offset: u64, limit: Option<usize>) -> CliResult<Vec<Record>> {
        let limit = limit.unwrap_or(usize::MAX);
        match self {
            Opened::Bucket(b) => b.get(offset, Some(limit)).await.map_err(|e| e.to_string()),
            Opened::ReadOnly(buckets) => {
                from_each(buckets, limit, |r, n| async move {
                    r.read(offset, n).await.map_err(|e| e.to_string())
                })
                .await
            }
            Opened::Topic(writer) => {
                from_each(writer.buckets(), limit, |b, n| async move {
                    b.get(offset, Some(n)).await.map_err(|e| e.to_string())
                })
                .await
            }
        }
    }

    pub async fn stats(&self) -> CliResult<Vec<BackendStats>> {
        match self {
            Opened::Bucket(b) => Ok(vec![b.stats().await.map_err(|e| e.to_string())?]),
            Opened::ReadOnly(buckets) => Ok(buckets
                .iter()
                .map(|r| {
                    let ls = r.stats();
                    BackendStats {
                        bucket_id: bucket_id_of(r.storage_path()),
                        total_count: ls.persisted_count,
                        buffer_count: 0,
                        persisted_count: ls.persisted_count,
                        log_start_offset: ls.log_start,
                        storage_path: r.storage_path().display().to_string(),
                        column_compression: ls.column_compression,
                        ..BackendStats::default()
                    }
                })
                .collect()),
            Opened::Topic(writer) => {
                let mut all = Vec::new();
                for b in writer.buckets() {
                    all.push(b.stats().await.map_err(|e| e.to_string())?);
                }
                Ok(all)
            }
        }
    }

    pub async fn close(&self) -> CliResult {
        let buckets: Vec<Arc<dyn StorageBackend>> = match self {
            Opened::Bucket(b) => vec![b.clone()],
            Opened::Topic(writer) => writer.buckets().to_vec(),
            Opened::ReadOnly(_) => Vec::new(),
        };
        for b in buckets {
            b.close().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// `persisting compact PATH`.
/// Opens, as its writer, a bucket that must already hold a Lance dataset (with its WAL
/// when it has one).
async fn open_dataset(path: &Path) -> Result<PersistingBackend, String> {
    if !path.join(DATASET_DIR).exists() {
        return Err(format!(
            "no Lance dataset at {}",
            path.join(DATASET_DIR).display()
        ));
    }
    let opts = PersistingOptions {
        enable_wal: path.join(WAL_DIR).is_dir(),
        ..PersistingOptions::default()
    };
    PersistingBackend::open(bucket_id_of(path), path, opts)
        .await
        .map_err(|e| e.to_string())
}

pub async fn verify(path: &Path) -> CliResult {
    let b = open_dataset(path).await?;
    let checked = b.verify_files().await;
    b.close().await.map_err(|e| e.to_string())?;
    let check = checked.map_err(|e| e.to_string())?;
    println!(
        "{}: {} data files, {} sealed and intact, {} without a seal (checked by row checksums only)",
        path.display(),
        check.files,
        check.files - check.unsealed,
        check.unsealed
    );
    Ok(())
}

pub async fn compact(path: &Path) -> CliResult {
    let b = open_dataset(path).await?;
    let before = b.stats().await.map_err(|e| e.to_string())?;
    b.compact().await.map_err(|e| e.to_string())?;
    let after = b.stats().await.map_err(|e| e.to_string())?;
    b.close().await.map_err(|e| e.to_string())?;
    eprintln!(
        "compacted {}: {} records, offsets unchanged",
        path.display(),
        after.persisted_count.max(before.persisted_count)
    );
    Ok(())
}

//! The queue around the backends (what the Pulsing framework does): a backend registry,
//! and writers and readers of a topic split into buckets.
//!
//! Invariants:
//! - a record goes to bucket `md5(str(record[bucket_column])) % num_buckets`, the bucket
//!   the Python queue picks, so data written here lands where its readers look;
//! - buckets live where Pulsing puts them: `{storage_path}/bucket_{id}` when the queue
//!   is given a `storage_path`, `{base_storage_path}/{topic}/bucket_{id}` otherwise, so
//!   a topic written from Python is read here and back;
//! - a topic is a single path component: names with separators, `..`, `.` or NUL are
//!   refused, so bucket directories under `base_storage_path` never escape it;
//! - within one [`QueueSystem`], a topic's writer and readers share the same bucket
//!   instances, so a blocked reader sees a put at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use persisting_codec::{Record, Value};
use serde_json::Value as Json;

use crate::backend::StorageBackend;
use crate::bucket::{LanceBackend, PersistingBackend};
use crate::bucketing::bucket_of;
use crate::error::{OptionsError, QueueError, Result, StorageError};
use crate::memory::MemoryBackend;
use crate::options::PersistingOptions;

/// What a backend factory is given to build one bucket.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    /// The bucket.
    pub bucket_id: u64,
    /// Its directory (see [`QueueOptions::topic_dir`]): a path, or a URI (`s3://…`).
    pub storage_path: PathBuf,
    /// Its directory relative to the queue's root (`{topic}/bucket_{id}`, or
    /// `bucket_{id}` for a topic with a `storage_path` of its own): where its WAL goes
    /// under a `wal_dir` option.
    pub relative_path: PathBuf,
    /// The queue's `backend_options`.
    pub options: serde_json::Map<String, Json>,
    /// The topic (for metrics labels).
    pub topic: String,
}

impl BucketSpec {
    /// The bucket's options: the queue's `backend_options`, with a `wal_dir` root
    /// narrowed to this bucket's own directory under it.
    pub fn options(&self) -> Result<PersistingOptions> {
        let (mut opts, _) = PersistingOptions::from_map(&self.options)?;
        opts.wal_dir = opts.wal_dir.map(|root| root.join(&self.relative_path));
        Ok(opts)
    }
}

/// Builds a bucket's backend.
pub type BackendFactory =
    Arc<dyn Fn(BucketSpec) -> BoxFuture<'static, Result<Arc<dyn StorageBackend>>> + Send + Sync>;

/// Backends by name: `memory`, `lance` and `persisting` built in.
#[derive(Clone)]
pub struct Registry {
    factories: Arc<RwLock<BTreeMap<String, BackendFactory>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("backends", &self.list_backends())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-in backends.
    pub fn new() -> Self {
        let r = Self {
            factories: Arc::new(RwLock::new(BTreeMap::new())),
        };
        r.register_backend("memory", |spec: BucketSpec| async move {
            Ok(Arc::new(MemoryBackend::new(spec.bucket_id)) as Arc<dyn StorageBackend>)
        });
        r.register_backend("lance", |spec: BucketSpec| async move {
            let opts = spec.options()?;
            let b = LanceBackend::open_with(spec.bucket_id, &spec.storage_path, opts).await?;
            Ok(Arc::new(b) as Arc<dyn StorageBackend>)
        });
        r.register_backend("persisting", |spec: BucketSpec| async move {
            let mut opts = spec.options()?;
            opts.metrics_topic = spec.topic.clone();
            let b = PersistingBackend::open(spec.bucket_id, &spec.storage_path, opts).await?;
            Ok(Arc::new(b) as Arc<dyn StorageBackend>)
        });
        r
    }

    /// Registers (or replaces) a backend under `name`.
    pub fn register_backend<F, Fut>(&self, name: &str, factory: F)
    where
        F: Fn(BucketSpec) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn StorageBackend>>> + Send + 'static,
    {
        let f: BackendFactory = Arc::new(move |spec| {
            let fut: BoxFuture<'static, Result<Arc<dyn StorageBackend>>> = Box::pin(factory(spec));
            fut
        });
        self.factories
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), f);
    }

    /// Registered backend names, sorted.
    pub fn list_backends(&self) -> Vec<String> {
        self.factories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The factory of `name`, or an error listing the registered names.
    pub fn get(&self, name: &str) -> Result<BackendFactory> {
        self.factories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                OptionsError::UnknownBackend {
                    name: name.to_owned(),
                    available: self.list_backends(),
                }
                .into()
            })
    }
}

/// Options of a queue topic.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// The topic's own directory, Pulsing's `storage_path`: buckets are
    /// `{storage_path}/bucket_{id}`. `None`: `{base_storage_path}/{topic}`.
    pub storage_path: Option<PathBuf>,
    /// Root of the topics without a `storage_path` of their own (Pulsing's
    /// `./queue_storage`).
    pub base_storage_path: PathBuf,
    /// Backend name in the registry (default `memory`).
    pub backend: String,
    /// Buckets per topic (default 4).
    pub num_buckets: u32,
    /// Field whose value picks the bucket (default `id`).
    pub bucket_column: String,
    /// Options passed to each bucket's backend.
    pub backend_options: serde_json::Map<String, Json>,
}

impl QueueOptions {
    /// Defaults, with every topic under `base_storage_path`
    /// (`{base_storage_path}/{topic}/bucket_{id}`).
    pub fn new(base_storage_path: impl Into<PathBuf>) -> Self {
        Self {
            storage_path: None,
            base_storage_path: base_storage_path.into(),
            backend: "memory".to_owned(),
            num_buckets: 4,
            bucket_column: "id".to_owned(),
            backend_options: serde_json::Map::new(),
        }
    }

    /// Defaults, with the topic's buckets directly in `storage_path`
    /// (`{storage_path}/bucket_{id}`), as Pulsing does when a queue is given a
    /// `storage_path`.
    pub fn at(storage_path: impl Into<PathBuf>) -> Self {
        let storage_path = storage_path.into();
        Self {
            storage_path: Some(storage_path.clone()),
            ..Self::new(storage_path)
        }
    }

    /// The directory holding `topic`'s buckets: `storage_path` when set, else
    /// `{base_storage_path}/{topic}` (the topic checked to be one plain name).
    pub fn topic_dir(&self, topic: &str) -> Result<PathBuf> {
        validate_topic(topic)?;
        Ok(match &self.storage_path {
            Some(dir) => dir.clone(),
            None => self.base_storage_path.join(topic),
        })
    }
}

/// Refuses topic names that are not a single, ordinary path component.
pub fn validate_topic(topic: &str) -> Result<()> {
    let reason = if topic.is_empty() {
        Some("is empty")
    } else if topic == "." || topic == ".." || topic.contains("..") {
        Some("contains `..` or is `.`")
    } else if topic.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(QueueError::InvalidTopic {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        }
        .into()),
        None => Ok(()),
    }
}

/// The bucket directory of a topic under a root of topics
/// (`{base_storage_path}/{topic}/bucket_{id}`), checked to lie under the root.
pub fn bucket_path(base_storage_path: &Path, topic: &str, bucket_id: u32) -> Result<PathBuf> {
    validate_topic(topic)?;
    Ok(base_storage_path
        .join(topic)
        .join(bucket_dir_name(bucket_id)))
}

/// The name of bucket `bucket_id`'s directory in its topic's directory.
pub fn bucket_dir_name(bucket_id: u32) -> String {
    format!("bucket_{bucket_id}")
}

/// `str(value)` as Python prints it, for the values that pick buckets: strings and
/// integers exactly, booleans and None as Python spells them, floats in Python's
/// shortest form for the common cases.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        Value::Float(f) if f.is_nan() => "nan".to_owned(),
        Value::Float(f) if f.is_infinite() => (if *f > 0.0 { "inf" } else { "-inf" }).to_owned(),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        Value::Float(f) => format!("{f:?}"),
        other => other.to_json_lossy().to_string(),
    }
}

/// One topic's buckets, shared by its writers and readers.
#[derive(Clone)]
pub struct Topic {
    name: String,
    opts: QueueOptions,
    buckets: Arc<Vec<Arc<dyn StorageBackend>>>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

/// Opens topics and hands out writers and readers; keeps one set of bucket instances
/// per topic.
#[derive(Debug, Clone, Default)]
pub struct QueueSystem {
    registry: Registry,
    topics: Arc<Mutex<HashMap<(PathBuf, String), Topic>>>,
}

impl QueueSystem {
    /// A system with the built-in backends.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backend registry (register custom backends here).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn topic(&self, topic: &str, opts: &QueueOptions) -> Result<Topic> {
        let dir = opts.topic_dir(topic)?;
        if opts.num_buckets == 0 {
            return Err(StorageError::invalid(
                "num_buckets",
                0,
                "must be at least 1",
            ));
        }
        let key = (dir.clone(), topic.to_owned());
        if let Some(t) = self
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(t.clone());
        }
        let factory = self.registry.get(&opts.backend)?;
        let mut buckets = Vec::with_capacity(opts.num_buckets as usize);
        for id in 0..opts.num_buckets {
            let relative = match &opts.storage_path {
                Some(_) => PathBuf::from(bucket_dir_name(id)),
                None => Path::new(topic).join(bucket_dir_name(id)),
            };
            let spec = BucketSpec {
                bucket_id: u64::from(id),
                storage_path: dir.join(bucket_dir_name(id)),
                relative_path: relative,
                options: opts.backend_options.clone(),
                topic: topic.to_owned(),
            };
            buckets.push(factory(spec).await?);
        }
        let t = Topic {
            name: topic.to_owned(),
            opts: opts.clone(),
            buckets: Arc::new(buckets),
        };
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(topics.entry(key).or_insert(t).clone())
    }

    /// A writer of `topic` (the seed's `write_queue`).
    pub async fn write_queue(&self, topic: &str, opts: QueueOptions) -> Result<QueueWriter> {
        Ok(QueueWriter {
            topic: self.topic(topic, &opts).await?,
        })
    }

    /// A reader of `topic` (the seed's `read_queue`) over the buckets `assign` picks.
    pub async fn read_queue(
        &self,
        topic: &str,
        opts: QueueOptions,
        assign: Assignment,
    ) -> Result<QueueReader> {
        let t = self.topic(topic, &opts).await?;
        let n = t.buckets.len() as u32;
        let ids: Vec<u32> = match assign {
            Assignment::All => (0..n).collect(),
            Assignment::Buckets(ids) => {
                if let Some(bad) = ids.iter().find(|id| **id >= n) {
                    return Err(StorageError::invalid(
                        "buckets",
                        bad,
                        format!("the topic has buckets 0..{n}"),
                    ));
                }
                ids
            }
            Assignment::Rank { rank, world_size } => {
                if world_size == 0 || rank >= world_size {
                    return Err(StorageError::invalid(
                        "rank",
                        format!("{rank} of {world_size}"),
                        "rank must be below a world_size of at least 1",
                    ));
                }
                (0..n).filter(|b| b % world_size == rank).collect()
            }
        };
        Ok(QueueReader {
            offsets: ids.iter().map(|id| (*id, 0)).collect(),
            topic: t,
            group: None,
        })
    }

    /// A reader of `topic` in consumer group `group`: each assigned bucket starts at
    /// the group's committed offset (0 where it has none), and
    /// [`QueueReader::commit`] commits what the reader has read. Readers of one group
    /// split the buckets between them by `assign` (e.g. [`Assignment::Rank`]).
    pub async fn read_queue_in_group(
        &self,
        topic: &str,
        opts: QueueOptions,
        assign: Assignment,
        group: &str,
    ) -> Result<QueueReader> {
        persisting_lance::validate_group(group)?;
        let mut reader = self.read_queue(topic, opts, assign).await?;
        let mut seen = BTreeMap::new();
        for (b, offset) in reader.offsets.iter_mut() {
            let committed = reader.topic.buckets[*b as usize]
                .committed_offset(group)
                .await?;
            *offset = committed.as_ref().map_or(0, |c| c.offset);
            seen.insert(*b, committed);
        }
        reader.group = Some(ReaderGroup {
            name: group.to_owned(),
            seen,
        });
        Ok(reader)
    }
}

/// The consumer group of a [`QueueReader`]: its name and, per bucket, the committed
/// state the reader last read or wrote.
#[derive(Debug)]
struct ReaderGroup {
    name: String,
    seen: BTreeMap<u32, Option<persisting_lance::GroupOffset>>,
}

/// Which buckets a reader reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Assignment {
    /// Every bucket.
    #[default]
    All,
    /// These buckets.
    Buckets(Vec<u32>),
    /// Round-robin share `rank` of `world_size` readers: buckets `b` with
    /// `b % world_size == rank`.
    Rank {
        /// This reader.
        rank: u32,
        /// Number of readers.
        world_size: u32,
    },
}

/// Writes records to the buckets of a topic.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    topic: Topic,
}

impl QueueWriter {
    fn bucket_for(&self, record: &Record) -> Result<u32> {
        let column = &self.topic.opts.bucket_column;
        let value = record
            .get(column)
            .ok_or_else(|| QueueError::MissingBucketColumn {
                column: column.clone(),
            })?;
        Ok(bucket_of(
            &python_str(value),
            self.topic.buckets.len() as u32,
        ))
    }

    /// Stores one record in its bucket.
    pub async fn put(&self, record: Record) -> Result<()> {
        let b = self.bucket_for(&record)?;
        self.topic.buckets[b as usize].put(record).await
    }

    /// Stores records, grouped per bucket. Every record is checked for the bucket
    /// column before any is stored.
    pub async fn put_batch(&self, records: Vec<Record>) -> Result<()> {
        let mut groups: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let picks = records
            .iter()
            .map(|r| self.bucket_for(r))
            .collect::<Result<Vec<_>>>()?;
        for (b, r) in picks.into_iter().zip(records) {
            groups.entry(b).or_default().push(r);
        }
        for (b, group) in groups {
            self.topic.buckets[b as usize].put_batch(group).await?;
        }
        Ok(())
    }

    /// Flushes every bucket.
    pub async fn flush(&self) -> Result<()> {
        for b in self.topic.buckets.iter() {
            b.flush().await?;
        }
        Ok(())
    }

    /// The bucket backends of the topic.
    pub fn buckets(&self) -> &[Arc<dyn StorageBackend>] {
        &self.topic.buckets
    }
}

/// Reads a topic's assigned buckets, keeping an offset per bucket.
#[derive(Debug)]
pub struct QueueReader {
    topic: Topic,
    offsets: BTreeMap<u32, u64>,
    group: Option<ReaderGroup>,
}

impl QueueReader {
    /// The buckets this reader reads, with the next offset of each.
    pub fn offsets(&self) -> &BTreeMap<u32, u64> {
        &self.offsets
    }

    /// The consumer group this reader reads in, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.name.as_str())
    }

    /// Commits, for the reader's group, the offsets it has read to in each bucket
    /// (at-least-once: call it after the records are processed). Each bucket's commit
    /// is made from the state this reader last saw: if another committer of the group
    /// moved it meanwhile, that bucket's commit is refused
    /// ([`persisting_lance::Error::GroupConflict`]) and nothing is lost silently.
    /// Buckets whose offset did not move are not written.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Err(QueueError::NoGroup.into());
        };
        for (b, offset) in &self.offsets {
            let seen = group.seen.get(b).cloned().flatten();
            if seen.as_ref().map(|s| s.offset) == Some(*offset) || (seen.is_none() && *offset == 0)
            {
                continue;
            }
            let done = self.topic.buckets[*b as usize]
                .commit_offset_from(&group.name, seen, *offset)
                .await?;
            group.seen.insert(*b, Some(done));
        }
        Ok(())
    }

    /// Sets the next offset of bucket `bucket` (one of the reader's).
    pub fn set_offset(&mut self, bucket: u32, offset: u64) -> Result<()> {
        match self.offsets.get_mut(&bucket) {
            Some(o) => {
                *o = offset;
                Ok(())
            }
            None => Err(StorageError::invalid(
                "bucket",
                bucket,
                format!(
                    "this reader reads buckets {:?}",
                    self.offsets.keys().collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// Up to `limit` records (`None`: all available) from the assigned buckets in
    /// bucket order, advancing the offsets.
    pub async fn get(&mut self, limit: Option<usize>) -> Result<Vec<Record>> {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for (b, offset) in self.offsets.iter_mut() {
            if left == 0 {
                break;
            }
            let got = self.topic.buckets[*b as usize]
                .get(*offset, Some(left))
                .await?;
            *offset += got.len() as u64;
            left -= got.len();
            out.extend(got);
        }
        Ok(out)
    }

    /// The assigned buckets' records merged as they come, from the reader's offsets
    /// (which this stream does not advance). With `block`, waits for new records.
    pub fn get_stream(&self, limit: Option<usize>, block: bool) -> BoxStream<'_, Result<Record>> {
        let streams = self
            .offsets
            .iter()
            .map(|(b, offset)| self.topic.buckets[*b as usize].get_stream(*offset, None, block));
        let merged = stream::select_all(streams);
        match limit {
            Some(n) => merged.take(n).boxed(),
            None => merged.boxed(),
        }
    }
}

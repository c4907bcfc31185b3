//! Consumer groups of a bucket: durable committed offsets, so a restarted reader
//! resumes where it stopped ([`BucketGroups`], over [`persisting_lance::Groups`]).
//!
//! A group is a name; per bucket it has a committed offset, the next offset it reads.
//! Invariants (the storage's, see [`persisting_lance::Groups`], plus the end):
//! - a commit returns once the offset is durable (fsynced on local disk, an
//!   acknowledged put on an object store), never moves a group back (a seek does,
//!   explicitly), and never past the bucket's end: for a backend, its acknowledged
//!   count; for a handle without the writer ([`BucketGroups::open`]), the records
//!   its storage holds (Lance's committed rows, and those of a local WAL);
//! - committing needs no writer lock: readers in other processes and machines
//!   commit while the writer writes; two committers of one group are serialised,
//!   and one committing from a stale read is refused ([`BucketGroups::commit_from`]);
//! - with metrics on, each commit and seek sets `persisting_consumer_lag` and counts
//!   `persisting_group_commits_total`, labelled `topic`, `bucket`, `group`.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use persisting::{LanceBackend, StorageBackend, record};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let backend = LanceBackend::open(0, dir.path(), 100, 1000).await.unwrap();
//! backend.put_batch(vec![record! {"id" => 1}, record! {"id" => 2}]).await.unwrap();
//! backend.commit_offset("etl", 1).await.unwrap();
//! let lag = backend.list_groups().await.unwrap();
//! assert_eq!((lag[0].committed, lag[0].end, lag[0].lag), (1, 2, 1));
//! assert!(backend.commit_offset("etl", 3).await.is_err()); // past the end
//! # });
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use persisting_lance::{GroupOffset, Groups, LanceBucket, LanceOptions, Location};
use serde::Serialize;

use crate::error::Result;
use crate::layout::WAL_DIR;

/// A group's place in a bucket: its committed offset, the bucket's end and the lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLag {
    /// The group.
    pub group: String,
    /// Its committed offset (the next offset it reads).
    pub committed: u64,
    /// The bucket's end (its record count).
    pub end: u64,
    /// Records the group has not committed: `end - committed`.
    pub lag: u64,
}

/// A backend's end: given an offset, makes the records below it durable (when they
/// are records of the bucket) and returns the acknowledged count.
pub(crate) type LiveEnd = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<u64>> + Send + Sync>;

/// Where a handle learns the bucket's end.
#[derive(Clone)]
enum End {
    /// A backend's acknowledged count.
    Live(LiveEnd),
    /// What the storage holds, read when a commit asks for more than last seen.
    Stored(Arc<Stored>),
}

struct Stored {
    location: Location,
    /// The bucket's local directory (its WAL), if it has one.
    wal_dir: Option<PathBuf>,
    storage_options: HashMap<String, String>,
    seen: AtomicU64,
}

impl Stored {
    /// The records the storage holds: Lance's committed rows, or more where a local
    /// WAL holds entries past them (whose segments are fsynced here: a record a
    /// group may be committed past survives a power loss).
    async fn read(&self) -> Result<u64> {
        let opts = LanceOptions {
            storage_options: self.storage_options.clone(),
            ..LanceOptions::default()
        };
        let committed = match &self.location {
            Location::Remote(_) => true,
            Location::Local(dir) => dir.join(persisting_lance::DATASET_DIR).exists(),
        };
        let lance = if committed {
            LanceBucket::open(self.location.to_path_buf(), opts)
                .await?
                .persisted_count()
        } else {
            0
        };
        let wal_dir = self.wal_dir.as_ref().map(|d| d.join(WAL_DIR));
        let wal = if let Some(wal_dir) = wal_dir.filter(|d| d.is_dir()) {
            let synced = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
                let Ok(inspected) = persisting_wal::inspect(&wal_dir) else {
                    return Ok(0);
                };
                let mut end = 0;
                for s in inspected.segments.iter().filter(|s| s.next_lsn > lance) {
                    // fsync of any descriptor of a file makes its written bytes durable
                    std::fs::File::open(&s.path)?.sync_data()?;
                    end = end.max(s.next_lsn);
                }
                Ok(end)
            })
            .await;
            match synced {
                Ok(Ok(end)) => end,
                Ok(Err(e)) => {
                    return Err(persisting_lance::Error::Io {
                        op: "fsync the WAL before a consumer group commit in",
                        path: self.wal_dir.clone().unwrap_or_default(),
                        source: e,
                    }
                    .into());
                }
                Err(_) => 0,
            }
        } else {
            0
        };
        let end = lance.max(wal);
        self.seen.fetch_max(end, Ordering::AcqRel);
        Ok(end)
    }
}

#[derive(Clone, Debug)]
struct Labels {
    topic: String,
    bucket: String,
}

/// The consumer groups of one bucket, with the bucket's end to check commits
/// against (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct BucketGroups {
    groups: Groups,
    end: End,
    metrics: Option<Labels>,
}

impl std::fmt::Debug for BucketGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketGroups")
            .field("groups", &self.groups)
            .finish()
    }
}

fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        describe_gauge!(
            "persisting_consumer_lag",
            "Records of the bucket a consumer group has not committed (end - committed), as of its last commit, seek or listing."
        );
        describe_counter!(
            "persisting_group_commits_total",
            "Commits and seeks of consumer group offsets."
        );
    });
}

impl BucketGroups {
    /// The groups of a backend's bucket, checked against its acknowledged count.
    pub(crate) fn live(groups: Groups, end: LiveEnd) -> Self {
        Self {
            groups,
            end: End::Live(end),
            metrics: None,
        }
    }

    /// The groups of the bucket at `storage_path` (a directory or a URI), opened
    /// without its writer: for a consumer in another process or on another machine.
    /// Commits are checked against what the storage holds (Lance's committed rows, and
    /// the entries of the WAL in `wal_dir`, the bucket's local directory: its
    /// `storage_path` unless the data is at a URI).
    pub async fn open(
        storage_path: impl AsRef<Path>,
        wal_dir: Option<&Path>,
        storage_options: &HashMap<String, String>,
    ) -> Result<Self> {
        let location = Location::of(storage_path)?;
        let groups = Groups::open(location.to_path_buf(), storage_options).await?;
        let wal_dir = wal_dir.or(location.local()).map(Path::to_path_buf);
        Ok(Self {
            groups,
            end: End::Stored(Arc::new(Stored {
                location,
                wal_dir,
                storage_options: storage_options.clone(),
                seen: AtomicU64::new(0),
            })),
            metrics: None,
        })
    }

    /// Records `persisting_consumer_lag` and `persisting_group_commits_total` with
    /// these labels.
    pub fn with_metrics(mut self, topic: &str, bucket_id: u64) -> Self {
        describe();
        self.metrics = Some(Labels {
            topic: topic.to_owned(),
            bucket: bucket_id.to_string(),
        });
        self
    }

    /// The storage of the groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The bucket's end now.
    pub async fn end(&self) -> Result<u64> {
        match &self.end {
            End::Live(f) => f(0).await,
            End::Stored(s) => s.read().await,
        }
    }

    /// The end to check `offset` against, the records below `offset` made durable
    /// first (a group is never committed past records a crash could take away):
    /// without the writer, the storage is read again only when `offset` is past what
    /// it held last time.
    async fn end_for(&self, offset: u64) -> Result<u64> {
        match &self.end {
            End::Live(f) => f(offset).await,
            End::Stored(s) => {
                let seen = s.seen.load(Ordering::Acquire);
                if offset <= seen {
                    Ok(seen)
                } else {
                    s.read().await
                }
            }
        }
    }

    fn observe(&self, group: &str, committed: u64, end: u64, counted: bool) {
        if let Some(l) = &self.metrics {
            let labels = [
                ("topic", l.topic.clone()),
                ("bucket", l.bucket.clone()),
                ("group", group.to_owned()),
            ];
            gauge!("persisting_consumer_lag", &labels).set(end.saturating_sub(committed) as f64);
            if counted {
                counter!("persisting_group_commits_total", &labels).increment(1);
            }
        }
    }

    /// `group`'s committed offset (`None`: it never committed).
    pub async fn committed(&self, group: &str) -> Result<Option<GroupOffset>> {
        Ok(self.groups.committed(group).await?)
    }

    /// Commits `offset` for `group` once it is durable; refused if it would move the
    /// group back or past the bucket's end.
    pub async fn commit(&self, group: &str, offset: u64) -> Result<GroupOffset> {
        let end = self.end_for(offset).await?;
        let done = self.groups.commit(group, offset, end).await?;
        self.observe(group, done.offset, end, true);
        Ok(done)
    }

    /// [`BucketGroups::commit`], refused ([`persisting_lance::Error::GroupConflict`])
    /// if another committer changed the group since this one read it as `seen`.
    pub async fn commit_from(
        &self,
        group: &str,
        seen: Option<&GroupOffset>,
        offset: u64,
    ) -> Result<GroupOffset> {
        let end = self.end_for(offset).await?;
        let done = self.groups.commit_from(group, seen, offset, end).await?;
        self.observe(group, done.offset, end, true);
        Ok(done)
    }

    /// Moves `group` to any offset up to the bucket's end.
    pub async fn seek(&self, group: &str, offset: u64) -> Result<GroupOffset> {
        let end = self.end_for(offset).await?;
        let done = self.groups.seek(group, offset, end).await?;
        self.observe(group, done.offset, end, true);
        Ok(done)
    }

    /// Deletes `group`; whether it had a committed offset.
    pub async fn delete(&self, group: &str) -> Result<bool> {
        let had = self.groups.delete(group).await?;
        // a deleted group lags nothing (its gauge cannot be removed)
        self.observe(group, 0, 0, false);
        Ok(had)
    }

    /// Every group with its committed offset, the bucket's end and the lag.
    pub async fn list(&self) -> Result<Vec<GroupLag>> {
        let all = self.groups.list().await?;
        let end = self.end().await?;
        Ok(all
            .into_iter()
            .map(|g| {
                self.observe(&g.group, g.offset, end, false);
                GroupLag {
                    lag: end.saturating_sub(g.offset),
                    committed: g.offset,
                    end,
                    group: g.group,
                }
            })
            .collect())
    }
}

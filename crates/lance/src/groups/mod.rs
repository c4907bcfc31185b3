//! [`Groups`]: the committed offsets of a bucket's consumer groups, stored beside its
//! dataset (`{storage_path}/groups/`), on local disk or at an object-store URI.
//!
//! A group's committed offset is the next offset it will read. Every change of it is
//! one checksummed 40-byte record ([`record`], `docs/groups-format.md`):
//! - on local disk, written into `groups/{group}.offsets` (a file of [`COMPACT_AT`]
//!   record slots, preallocated with zeros) after its last record, under an exclusive
//!   `flock` of that file, and made durable by an `fdatasync` before the change
//!   returns (as a WAL append into preallocated space); a full file is rewritten with
//!   its last record alone (written, fsynced, renamed over, directory fsynced);
//! - at a URI, one object per change, `groups/{group}/{generation:020}`, created with
//!   a put-if-absent: of two committers of one generation, one wins.
//!
//! Invariants:
//! - a change returns only once it is durable (fsynced; or a put the store
//!   acknowledged), and a change is decided on the group's newest durable state,
//!   read under the lock (locally) or before a conditional put (remote): two
//!   committers in two processes or machines are serialised, and none is lost
//!   silently: a commit made from a stale read fails with [`Error::GroupConflict`];
//! - [`Groups::commit`] never moves a group back and never past the end the caller
//!   gives (the bucket's acknowledged count); [`Groups::seek`] moves it anywhere up
//!   to the end;
//! - a record that fails its checksum is never taken for an offset: a damaged last
//!   record of a local file is an interrupted change (it was never acknowledged: the
//!   change before it is the group's state, as a WAL treats its torn tail), and any
//!   other damage is [`Error::GroupDamaged`] naming the file or object;
//! - the group state is no part of the Lance dataset: pylance opens it as before.

mod local;
pub(crate) mod record;
mod remote;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::Disk;

/// The directory of the group state in a bucket's storage path.
pub const GROUPS_DIR: &str = "groups";

/// Longest group name, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 200;

/// Record slots of a local group file: a full one is rewritten with its last record
/// alone.
pub const COMPACT_AT: usize = 128;

/// A group's committed offset in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The group.
    pub group: String,
    /// The next offset the group reads.
    pub offset: u64,
    /// Changes of the group so far (1 after its first commit): what a committer read,
    /// for [`Groups::commit_from`].
    pub generation: u64,
}

/// Refuses group names that are not one plain name: empty, longer than
/// [`GROUP_NAME_BYTES_MAX`] bytes, `.`, containing `..`, a path separator, NUL or
/// another control character, or ending in `.tmp`.
pub fn validate_group(group: &str) -> Result<()> {
    let reason = if group.is_empty() {
        Some("is empty".to_owned())
    } else if group.len() > GROUP_NAME_BYTES_MAX {
        Some(format!(
            "is {} bytes long; at most {GROUP_NAME_BYTES_MAX}",
            group.len()
        ))
    } else if group == "." || group.contains("..") {
        Some("contains `..` or is `.`".to_owned())
    } else if group.contains(['/', '\\']) {
        Some("contains a path separator".to_owned())
    } else if group.chars().any(char::is_control) {
        Some("contains NUL or another control character".to_owned())
    } else if group.ends_with(".tmp") {
        Some("ends in `.tmp` (the suffix of files being written)".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidGroup {
            group: group.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What a change asks of the group's current state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ask {
    /// Forward only.
    Commit,
    /// Forward only, and only if the group is as this committer read it
    /// (`None`: it had no committed offset).
    CommitFrom(Option<(u64, u64)>),
    /// Anywhere.
    Seek,
}

/// The state a change leads to, decided on the group's `current` state (what this
/// module's stores call under their lock or before their conditional put).
pub(crate) struct Decide {
    pub(crate) group: String,
    pub(crate) bucket: String,
    pub(crate) ask: Ask,
    pub(crate) offset: u64,
    pub(crate) end: u64,
}

impl Decide {
    /// The offset to store, or why not.
    pub(crate) fn decide(&self, current: Option<&record::Change>) -> Result<u64> {
        if self.offset > self.end {
            return Err(Error::GroupPastEnd {
                group: self.group.clone(),
                bucket: self.bucket.clone(),
                requested: self.offset,
                end: self.end,
            });
        }
        if let Ask::CommitFrom(seen) = self.ask {
            let now = current.map(|c| (c.generation, c.offset));
            if now != seen {
                return Err(Error::GroupConflict {
                    group: self.group.clone(),
                    bucket: self.bucket.clone(),
                    seen: seen.map(|(_, o)| o),
                    found: now.map(|(_, o)| o),
                    requested: self.offset,
                });
            }
        }
        if let (Ask::Commit | Ask::CommitFrom(_), Some(c)) = (self.ask, current)
            && self.offset < c.offset
        {
            return Err(Error::GroupBackwards {
                group: self.group.clone(),
                bucket: self.bucket.clone(),
                committed: c.offset,
                requested: self.offset,
            });
        }
        Ok(self.offset)
    }
}

#[derive(Debug)]
enum Place {
    Local(local::Local),
    Remote(remote::Remote),
}

/// The consumer groups of one bucket (see the module docs). Cheap to clone; needs no
/// lock of the bucket's writer: any process or machine that reaches the bucket's
/// storage may commit.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use persisting_lance::Groups;
///
/// let dir = tempfile::tempdir().unwrap();
/// let groups = Groups::open(dir.path(), &Default::default()).await.unwrap();
/// let end = 100; // the bucket's record count
/// let c = groups.commit("trainer", 40, end).await.unwrap();
/// assert_eq!(groups.committed("trainer").await.unwrap(), Some(c.clone()));
/// assert!(groups.commit("trainer", 30, end).await.is_err()); // never back
/// assert!(groups.commit("trainer", 101, end).await.is_err()); // never past the end
/// groups.seek("trainer", 0, end).await.unwrap(); // explicitly back
/// assert!(groups.commit_from("trainer", Some(&c), 50, end).await.is_err()); // stale view
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Groups {
    place: Arc<Place>,
    /// The bucket, as errors name it.
    bucket: String,
}

impl Groups {
    /// The groups of the bucket at `storage_path` (a directory, or a URI such as
    /// `s3://…` reached with `storage_options` as its dataset is).
    pub async fn open(
        storage_path: impl AsRef<Path>,
        storage_options: &HashMap<String, String>,
    ) -> Result<Self> {
        Self::open_on(storage_path, storage_options, crate::store::real()).await
    }

    /// [`Groups::open`] with a local bucket's files on `disk` (a [`crate::SimDisk`]
    /// in power-loss tests; unused for a URI).
    pub async fn open_on(
        storage_path: impl AsRef<Path>,
        storage_options: &HashMap<String, String>,
        disk: Arc<dyn Disk>,
    ) -> Result<Self> {
        let location = crate::Location::of(storage_path)?;
        let bucket = location.to_string();
        let place = match &location {
            crate::Location::Remote(_) => {
                Place::Remote(remote::Remote::open(&bucket, storage_options).await?)
            }
            crate::Location::Local(path) => Place::Local(local::Local::new(path, disk)),
        };
        Ok(Self {
            place: Arc::new(place),
            bucket,
        })
    }

    /// Where `group`'s state is kept (a file or an object prefix), as errors name it.
    pub fn location(&self, group: &str) -> String {
        match &*self.place {
            Place::Local(l) => l.path(group).display().to_string(),
            Place::Remote(r) => r.uri(group),
        }
    }

    /// `group`'s committed offset (`None`: it never committed, or was deleted).
    pub async fn committed(&self, group: &str) -> Result<Option<GroupOffset>> {
        validate_group(group)?;
        let found = match &*self.place {
            Place::Local(l) => {
                let l = l.clone();
                let g = group.to_owned();
                blocking(move || l.read(&g)).await?
            }
            Place::Remote(r) => r.newest(group).await?,
        };
        Ok(found.map(|c| offset_of(group, c)))
    }

    /// Commits `offset` for `group`, durably: refused (nothing written) if it would
    /// move the group back ([`Error::GroupBackwards`]) or past `end`
    /// ([`Error::GroupPastEnd`]), the bucket's acknowledged record count.
    pub async fn commit(&self, group: &str, offset: u64, end: u64) -> Result<GroupOffset> {
        self.change(group, Ask::Commit, offset, end).await
    }

    /// [`Groups::commit`], only if the group is still as this committer read it
    /// (`seen`: what [`Groups::committed`] or the last commit returned; `None`: it had
    /// no committed offset). A change by another committer since is
    /// [`Error::GroupConflict`] naming the offset it lost to.
    pub async fn commit_from(
        &self,
        group: &str,
        seen: Option<&GroupOffset>,
        offset: u64,
        end: u64,
    ) -> Result<GroupOffset> {
        let seen = seen.map(|s| (s.generation, s.offset));
        self.change(group, Ask::CommitFrom(seen), offset, end).await
    }

    /// Moves `group` to `offset`, back or forward, up to `end` (creating it).
    pub async fn seek(&self, group: &str, offset: u64, end: u64) -> Result<GroupOffset> {
        self.change(group, Ask::Seek, offset, end).await
    }

    async fn change(&self, group: &str, ask: Ask, offset: u64, end: u64) -> Result<GroupOffset> {
        validate_group(group)?;
        let decide = Decide {
            group: group.to_owned(),
            bucket: self.bucket.clone(),
            ask,
            offset,
            end,
        };
        let changed = match &*self.place {
            Place::Local(l) => {
                let l = l.clone();
                blocking(move || l.change(&decide.group, |current| decide.decide(current))).await?
            }
            Place::Remote(r) => r.change(group, |current| decide.decide(current)).await?,
        };
        Ok(offset_of(group, changed))
    }

    /// Deletes `group` (its committed offset is gone); whether it had one.
    pub async fn delete(&self, group: &str) -> Result<bool> {
        validate_group(group)?;
        match &*self.place {
            Place::Local(l) => {
                let l = l.clone();
                let g = group.to_owned();
                blocking(move || l.delete(&g)).await
            }
            Place::Remote(r) => r.delete(group).await,
        }
    }

    /// Every group of the bucket with its committed offset, sorted by name.
    pub async fn list(&self) -> Result<Vec<GroupOffset>> {
        let mut all = match &*self.place {
            Place::Local(l) => {
                let l = l.clone();
                blocking(move || l.list()).await?
            }
            Place::Remote(r) => r.list().await?,
        };
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(g, c)| offset_of(&g, c)).collect())
    }
}

fn offset_of(group: &str, c: record::Change) -> GroupOffset {
    GroupOffset {
        group: group.to_owned(),
        offset: c.offset,
        generation: c.generation,
    }
}

/// Runs the local store's file work on a blocking thread.
/// On a multi-thread runtime the work runs on this worker (`block_in_place`: the
/// worker's other tasks move to another thread), which saves a commit the two thread
/// hops of `spawn_blocking` (a third of its time, measured against one fdatasync).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        return tokio::task::block_in_place(f);
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            op: "run a consumer group change",
            path: GROUPS_DIR.into(),
            source: std::io::Error::other(e),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_one_plain_name() {
        for ok in ["trainer", "a.b", "stage-2_eval", "ü", &"x".repeat(200)] {
            assert!(validate_group(ok).is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            ("", "empty"),
            (".", "`..`"),
            ("..", "`..`"),
            ("a..b", "`..`"),
            ("a/b", "separator"),
            ("a\\b", "separator"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("x.tmp", ".tmp"),
        ] {
            let e = validate_group(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("invalid consumer group name"), "{e}");
        }
        let e = validate_group(&"x".repeat(201)).unwrap_err().to_string();
        assert!(e.contains("201 bytes"), "{e}");
    }
}

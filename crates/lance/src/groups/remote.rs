//! Consumer groups of a bucket at an object-store URI: one object per change,
//! `{storage_path}/groups/{group}/{generation:020}`, created with a put-if-absent.
//!
//! Invariants:
//! - the group's state is its object of the highest generation; a change is decided
//!   on it and put as the next generation only if no one has put that one: of two
//!   committers racing for a generation, one wins and the other decides again on the
//!   winner's change (so a stale commit is refused, never lost silently);
//! - only the newest [`KEPT`] generations are kept: a generation is removed once
//!   `KEPT` newer ones exist. A committer that read the group that long ago may
//!   re-create a removed generation (its put-if-absent succeeds); listed after the
//!   put, a generation `KEPT` or more above its own says so, and it decides again (the
//!   left-over object is below the newest: listed, never believed). A committer held
//!   up after a put that did land, while others made `KEPT` changes, cannot tell the
//!   two apart: it decides again too, so its commit may be refused as stale although
//!   it landed (a re-read shows it) — never the other way round;
//! - the store's client retries a put answered by a server error, and the first
//!   attempt may have landed: a put refused as existing that finds its own token
//!   there is its own change;
//! - objects older than the newest `KEPT` are removed after a change (best effort: a
//!   left-over one is only listed, never believed, as newer ones exist).

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use lance_io::object_store::{ObjectStore as LanceStore, ObjectStoreParams, ObjectStoreRegistry};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::GROUPS_DIR;
use super::record::{Change, token};
use crate::error::{Error, Result};

/// Tries of one change against committers racing for the same generation.
const RACES_MAX: usize = 16;

/// Generations kept of a group: older objects are removed after a change.
const KEPT: u64 = 64;

#[derive(Debug)]
pub(crate) struct Remote {
    store: Arc<dyn ObjectStore>,
    /// `groups/` beside the dataset.
    dir: StorePath,
    /// `{storage_path}/groups`, as errors name it.
    uri: String,
}

impl Remote {
    pub(crate) async fn open(
        root: &str,
        storage_options: &HashMap<String, String>,
    ) -> Result<Self> {
        let uri = format!("{}/{GROUPS_DIR}", root.trim_end_matches('/'));
        let params = ObjectStoreParams {
            storage_options_accessor: crate::store::accessor(&crate::store::remote_options(
                storage_options,
            )),
            ..ObjectStoreParams::default()
        };
        let registry = Arc::new(ObjectStoreRegistry::default());
        let (store, base) = LanceStore::from_uri_and_params(registry, root, &params)
            .await
            .map_err(Error::lance("reach the consumer groups of", &uri))?;
        Ok(Self {
            store: Arc::clone(&store.inner),
            dir: base.clone().join(GROUPS_DIR),
            uri,
        })
    }

    pub(crate) fn uri(&self, group: &str) -> String {
        format!("{}/{group}", self.uri)
    }

    fn object(&self, group: &str, generation: u64) -> StorePath {
        self.dir
            .clone()
            .join(group)
            .join(format!("{generation:020}"))
    }

    /// The generations of `group`'s objects, ascending.
    async fn generations(&self, group: &str) -> Result<Vec<u64>> {
        let prefix = self.dir.clone().join(group);
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(Error::store("list consumer group", &self.uri(group)))?;
        let mut found: Vec<u64> = listed
            .iter()
            .filter_map(|meta| meta.location.filename()?.parse::<u64>().ok())
            .collect();
        found.sort_unstable();
        Ok(found)
    }

    /// The change stored as `group`'s `generation` (`None`: removed meanwhile).
    async fn fetch(&self, group: &str, generation: u64) -> Result<Option<Change>> {
        let path = self.object(group, generation);
        let named = || format!("{}/{generation:020}", self.uri(group));
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(Error::store("read consumer group", &named()))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store("read consumer group", &named())(e)),
        };
        let change = Change::decode(&bytes).map_err(|reason| Error::GroupDamaged {
            path: named(),
            reason,
        })?;
        if change.generation != generation {
            return Err(Error::GroupDamaged {
                path: named(),
                reason: format!(
                    "it holds generation {}, its name says {generation}",
                    change.generation
                ),
            });
        }
        Ok(Some(change))
    }

    /// `group`'s newest change.
    pub(crate) async fn newest(&self, group: &str) -> Result<Option<Change>> {
        // an older object may be removed by a committer between the list and the get:
        // list again
        for _ in 0..RACES_MAX {
            let Some(&newest) = self.generations(group).await?.last() else {
                return Ok(None);
            };
            if let Some(change) = self.fetch(group, newest).await? {
                return Ok(Some(change));
            }
        }
        Err(Error::Io {
            op: "read consumer group",
            path: self.uri(group).into(),
            source: std::io::Error::other("its objects kept changing while it was read"),
        })
    }

    /// Applies one change (see `Local::change`).
    pub(crate) async fn change(
        &self,
        group: &str,
        decide: impl Fn(Option<&Change>) -> Result<u64>,
    ) -> Result<Change> {
        for _ in 0..RACES_MAX {
            let current = self.newest(group).await?;
            let offset = decide(current.as_ref())?;
            let change = Change {
                generation: current.map_or(1, |c| c.generation + 1),
                offset,
                token: token(),
            };
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let path = self.object(group, change.generation);
            let bytes = bytes::Bytes::copy_from_slice(&change.encode());
            let landed = match self.store.put_opts(&path, bytes.into(), opts).await {
                Ok(_) => true,
                // a retried put of this change, which landed
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.fetch(group, change.generation).await? == Some(change)
                }
                Err(e) => return Err(Error::store("commit consumer group", &self.uri(group))(e)),
            };
            // a generation is removed only once KEPT newer ones exist, so a put that
            // re-created a removed one (its committer read the group that long ago)
            // finds a generation KEPT or more above it: not a change, decide again.
            // (Fewer above it are changes made on top of this one.)
            let listed = self.generations(group).await?;
            if landed && listed.last().is_some_and(|n| *n < change.generation + KEPT) {
                let oldest_kept = (change.generation + 1).saturating_sub(KEPT);
                self.forget(group, listed.into_iter().filter(|g| *g < oldest_kept))
                    .await;
                return Ok(change);
            }
            // another committer took this generation, or a later one: decide again on
            // the newest change
        }
        Err(Error::Io {
            op: "commit consumer group",
            path: self.uri(group).into(),
            source: std::io::Error::other("other committers kept taking each generation first"),
        })
    }

    /// Removes these generations of `group` (best effort).
    async fn forget(&self, group: &str, old: impl Iterator<Item = u64>) {
        for g in old {
            let _ = self.store.delete(&self.object(group, g)).await;
        }
    }

    /// Deletes every object of `group`; whether it had any.
    pub(crate) async fn delete(&self, group: &str) -> Result<bool> {
        let all = self.generations(group).await?;
        for g in &all {
            match self.store.delete(&self.object(group, *g)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete consumer group", &self.uri(group))(e)),
            }
        }
        Ok(!all.is_empty())
    }

    /// Every group with a committed offset.
    pub(crate) async fn list(&self) -> Result<Vec<(String, Change)>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.dir))
            .await
            .map_err(Error::store("list consumer groups", &self.uri))?;
        let mut out = Vec::new();
        for prefix in &listed.common_prefixes {
            let Some(group) = prefix.filename() else {
                continue;
            };
            if super::validate_group(group).is_err() {
                continue;
            }
            if let Some(change) = self.newest(group).await? {
                out.push((group.to_owned(), change));
            }
        }
        Ok(out)
    }
}

//! [`Lease`]: one writer per remote bucket, across machines. A file lock cannot reach
//! an object store, so the writer holds a lease object beside its dataset
//! (`{storage_path}/writer.lease`): created with a put-if-absent, renewed with a put
//! conditional on the version it last wrote, valid until the expiry it names.
//!
//! Invariants:
//! - a handle writes (commits, and through the facade acknowledges puts) only while
//!   it holds the lease by its own clock: [`Lease::ensure`] renews it once half of
//!   its term has passed, and fails for good once another writer has replaced it;
//! - another writer takes the lease over only after its expiry, by its own clock,
//!   with a put conditional on the version it read: of two racing takers one wins;
//! - the lease alone does not order commits: the version check of every commit
//!   (`object`) refuses a commit after another writer's, whatever the clocks say.
//!
//! Clocks: the expiry is wall-clock time of the holder; machines whose clocks
//! disagree by more than the margin between renewal (half the term) and expiry can
//! see a lease as expired early. Keep the term well above the clock skew.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lance_io::object_store::{ObjectStore as LanceStore, ObjectStoreParams, ObjectStoreRegistry};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

use crate::error::{Error, Result};

/// The lease object's name beside the dataset.
pub const LEASE_OBJECT: &str = "writer.lease";

/// A lease held by this handle.
#[derive(Debug)]
pub(crate) struct Lease {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    /// Shown in errors: `{storage_path}/writer.lease`.
    uri: String,
    holder: String,
    term: Duration,
    held: tokio::sync::Mutex<Held>,
    lost: AtomicBool,
}

#[derive(Debug, Clone)]
struct Held {
    version: UpdateVersion,
    expires: SystemTime,
}

/// What a lease object says.
#[derive(Debug)]
struct Content {
    holder: String,
    expires: SystemTime,
}

impl Content {
    fn encode(&self) -> String {
        let ms = self
            .expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        serde_json::json!({"holder": self.holder, "expires_unix_ms": ms as u64}).to_string()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            holder: v.get("holder")?.as_str()?.to_owned(),
            expires: UNIX_EPOCH + Duration::from_millis(v.get("expires_unix_ms")?.as_u64()?),
        })
    }
}

/// A new writer name: host, process and a random part (two handles of one process
/// are two writers). The default of `LanceOptions::writer_id`.
pub fn writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let unique = std::collections::hash_map::RandomState::new();
    let random = std::hash::BuildHasher::hash_one(&unique, nanos);
    format!("{host}:{}:{random:016x}", std::process::id())
}

impl Lease {
    /// Takes the lease of the bucket at `root` (a URI) for `term`: creates it, or
    /// takes over one that has expired. A lease another writer holds is an
    /// [`Error::LeaseHeld`] naming it.
    pub(crate) async fn acquire(
        root: &str,
        params: &ObjectStoreParams,
        term: Duration,
        holder: Option<String>,
    ) -> Result<Self> {
        let uri = format!("{}/{LEASE_OBJECT}", root.trim_end_matches('/'));
        let registry = Arc::new(ObjectStoreRegistry::default());
        let (store, base) = LanceStore::from_uri_and_params(registry, root, params)
            .await
            .map_err(Error::lance("reach the lease of", &uri))?;
        let lease = Self {
            store: Arc::clone(&store.inner),
            path: base.clone().join(LEASE_OBJECT),
            uri,
            holder: holder.unwrap_or_else(writer_name),
            term,
            held: tokio::sync::Mutex::new(Held {
                version: UpdateVersion {
                    e_tag: None,
                    version: None,
                },
                expires: UNIX_EPOCH,
            }),
            lost: AtomicBool::new(false),
        };
        lease.take().await?;
        Ok(lease)
    }

    fn failed(&self, op: &'static str) -> impl Fn(object_store::Error) -> Error + '_ {
        move |e| Error::Io {
            op,
            path: self.uri.clone().into(),
            source: std::io::Error::other(e.to_string()),
        }
    }

    /// Writes the lease with a new expiry in `mode`; returns what it now holds.
    async fn put(&self, mode: PutMode) -> object_store::Result<Held> {
        let expires = SystemTime::now() + self.term;
        let content = Content {
            holder: self.holder.clone(),
            expires,
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let put = self
            .store
            .put_opts(&self.path, content.encode().into(), opts)
            .await?;
        Ok(Held {
            version: UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            },
            expires,
        })
    }

    /// Creates the lease, or takes over an expired one (a few tries: racing takers).
    async fn take(&self) -> Result<()> {
        for _ in 0..3 {
            let held = match self.put(PutMode::Create).await {
                Ok(held) => held,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let current = self
                        .store
                        .get(&self.path)
                        .await
                        .map_err(self.failed("read the lease"))?;
                    let version = UpdateVersion {
                        e_tag: current.meta.e_tag.clone(),
                        version: current.meta.version.clone(),
                    };
                    let bytes = current
                        .bytes()
                        .await
                        .map_err(self.failed("read the lease"))?;
                    let content = Content::decode(&bytes).ok_or_else(|| Error::Io {
                        op: "read the lease",
                        path: self.uri.clone().into(),
                        source: std::io::Error::other("not a lease this crate wrote"),
                    })?;
                    // this writer's own lease (restarted with the same name, that
                    // is the same WAL): taken back at once; another's once expired
                    let left = content.expires.duration_since(SystemTime::now());
                    if let (Ok(left), false) = (left, content.holder == self.holder) {
                        return Err(Error::LeaseHeld {
                            lease: self.uri.clone(),
                            holder: content.holder,
                            expires_in: left,
                        });
                    }
                    match self.put(PutMode::Update(version)).await {
                        Ok(held) => held,
                        // another taker won the race: look again
                        Err(object_store::Error::Precondition { .. }) => continue,
                        Err(e) => return Err(self.failed("take over the lease")(e)),
                    }
                }
                Err(e) => return Err(self.failed("create the lease")(e)),
            };
            *self.held.lock().await = held;
            return Ok(());
        }
        Err(Error::Io {
            op: "take over the lease",
            path: self.uri.clone().into(),
            source: std::io::Error::other("other writers kept taking it first"),
        })
    }

    /// Returns `Ok` while this handle holds the lease, renewing it once half of its
    /// term has passed. Once another writer has replaced it, every call fails with
    /// [`Error::LeaseLost`].
    pub(crate) async fn ensure(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error(None));
        }
        let mut held = self.held.lock().await;
        let renew_at = held.expires - self.term / 2;
        if SystemTime::now() < renew_at {
            return Ok(());
        }
        match self.put(PutMode::Update(held.version.clone())).await {
            Ok(renewed) => {
                *held = renewed;
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                self.lost.store(true, Ordering::SeqCst);
                let holder = match self.store.get(&self.path).await {
                    Ok(current) => current
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| Content::decode(&b))
                        .map(|c| c.holder),
                    Err(_) => None,
                };
                Err(self.lost_error(holder))
            }
            // a transient failure: the lease may still be ours, not yet expired
            Err(e) if SystemTime::now() < held.expires => Err(self.failed("renew the lease")(e)),
            Err(_) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(self.lost_error(None))
            }
        }
    }

    fn lost_error(&self, holder: Option<String>) -> Error {
        Error::LeaseLost {
            lease: self.uri.clone(),
            holder: holder.unwrap_or_else(|| "unknown".to_owned()),
        }
    }
}

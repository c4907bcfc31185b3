//! [`Lease`]: one writer per remote bucket, across machines. A file lock cannot reach
//! an object store, so the writer holds a lease beside its dataset: a sequence of
//! objects `{storage_path}/_lease/{n:020}`, each created with a put-if-absent (the
//! one conditional write every store Lance commits to offers; a conditional update
//! is not, e.g. on `file-object-store://`). The newest names the holder and the
//! expiry. Renewing or taking over is creating the next number: of two writers
//! trying, one wins.
//!
//! Invariants:
//! - a handle writes (commits, and through the facade acknowledges puts) only while
//!   it holds the newest lease by its own clock: once half of its term has passed,
//!   [`Lease::ensure`] renews it on a task of its own (no writer waits for the store
//!   while the lease holds; a failing store is tried again at most every
//!   [`RENEW_GAP`]), after its expiry it renews it before answering, and it fails for
//!   good once another writer has created a newer one;
//! - a lease is lost only to another writer: a renewal the store does not answer
//!   before the expiry suspends the handle ([`Error::LeaseSuspended`]: every call
//!   fails, nothing is acknowledged) until a renewal goes through, which it does once
//!   the store answers unless another writer has taken the lease meanwhile (its
//!   object is then found, by the put-if-absent or the listing after it);
//! - another writer takes the lease over only after its expiry, by its own clock (or
//!   at once if the newest lease names it: the same writer, restarted); a writer that
//!   closes releases it ([`Lease::release`]: a newest lease that has expired), so the
//!   next one need not wait out the term;
//! - the lease alone does not order commits: the version check of every commit
//!   (`object`) refuses a commit after another writer's, whatever the clocks say.
//!
//! Clocks: the expiry is wall-clock time of the holder; machines whose clocks
//! disagree by more than the margin between renewal (half the term) and expiry can
//! see a lease as expired early. Keep the term well above the clock skew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use lance_io::object_store::{ObjectStore as LanceStore, ObjectStoreParams, ObjectStoreRegistry};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use crate::error::{Error, Result};

/// The directory of the lease objects beside the dataset.
pub const LEASE_DIR: &str = "_lease";

/// The least time between two renewals tried while the lease still holds (a store
/// that fails at once is not asked again at every write).
pub const RENEW_GAP: Duration = Duration::from_millis(500);

/// A lease held by this handle.
#[derive(Debug)]
pub(crate) struct Lease {
    store: Arc<dyn ObjectStore>,
    /// `_lease/` beside the dataset.
    dir: StorePath,
    /// Shown in errors: `{storage_path}/_lease`.
    uri: String,
    holder: String,
    term: Duration,
    /// Serialises the changes of the lease (taking, renewing: store requests).
    held: tokio::sync::Mutex<Held>,
    /// What `held` said after its last change: read without waiting for a renewal.
    known: std::sync::Mutex<Held>,
    /// A renewal runs on a task of its own.
    renewing: AtomicBool,
    /// When the last renewal in the background was started.
    last_try: std::sync::Mutex<Option<std::time::Instant>>,
    lost: AtomicBool,
    /// Given up by [`Lease::release`] (so `lost` too).
    released: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    /// The number of the newest lease object, this handle's.
    number: u64,
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
    /// Takes the lease of the bucket at `root` (a URI) for `term`: creates the first,
    /// or takes over one that has expired (or names `holder`). A lease another
    /// writer holds is an [`Error::LeaseHeld`] naming it.
    pub(crate) async fn acquire(
        root: &str,
        params: &ObjectStoreParams,
        term: Duration,
        holder: Option<String>,
    ) -> Result<Self> {
        let uri = format!("{}/{LEASE_DIR}", root.trim_end_matches('/'));
        let registry = Arc::new(ObjectStoreRegistry::default());
        let (store, base) = LanceStore::from_uri_and_params(registry, root, params)
            .await
            .map_err(Error::lance("reach the lease of", &uri))?;
        let lease = Self {
            store: Arc::clone(&store.inner),
            dir: base.clone().join(LEASE_DIR),
            uri,
            holder: holder.unwrap_or_else(writer_name),
            term,
            held: tokio::sync::Mutex::new(Held {
                number: 0,
                expires: UNIX_EPOCH,
            }),
            known: std::sync::Mutex::new(Held {
                number: 0,
                expires: UNIX_EPOCH,
            }),
            renewing: AtomicBool::new(false),
            last_try: std::sync::Mutex::new(None),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
        };
        lease.take().await?;
        Ok(lease)
    }

    fn failed(&self, op: &'static str) -> impl Fn(object_store::Error) -> Error + '_ {
        Error::store(op, &self.uri)
    }

    fn object(&self, number: u64) -> StorePath {
        self.dir.clone().join(format!("{number:020}"))
    }

    /// Creates lease object `number` naming this writer, if no one has: fails with
    /// `AlreadyExists` when another writer's is there. The store's client retries a
    /// put answered by a server error, and the first attempt may have landed: a
    /// retry that finds this writer's own object has created it.
    async fn create(&self, number: u64, expires: SystemTime) -> object_store::Result<Held> {
        let content = Content {
            holder: self.holder.clone(),
            expires,
        };
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let path = self.object(number);
        match self
            .store
            .put_opts(&path, content.encode().into(), opts)
            .await
        {
            Ok(_) => Ok(Held { number, expires }),
            Err(exists @ object_store::Error::AlreadyExists { .. }) => {
                match self.fetch(number).await {
                    Ok(Some(found)) if found.holder == self.holder => Ok(Held {
                        number,
                        expires: found.expires,
                    }),
                    // gone since: removed as old by the writer that created it, whose
                    // newer lease superseded it (never this writer's own)
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Err(exists),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The newest lease object: its number and what it says (`None`: no lease yet).
    async fn newest(&self) -> Result<Option<(u64, Content)>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.dir))
            .try_collect()
            .await
            .map_err(self.failed("list the leases"))?;
        let newest = listed
            .iter()
            .filter_map(|meta| meta.location.filename()?.parse::<u64>().ok())
            .max();
        let Some(number) = newest else {
            return Ok(None);
        };
        Ok(Some((number, self.read(number).await?)))
    }

    /// What lease object `number` says (`None`: not a lease this crate wrote).
    async fn fetch(&self, number: u64) -> object_store::Result<Option<Content>> {
        let bytes = self.store.get(&self.object(number)).await?.bytes().await?;
        Ok(Content::decode(&bytes))
    }

    /// What lease object `number` says.
    async fn read(&self, number: u64) -> Result<Content> {
        let content = self
            .fetch(number)
            .await
            .map_err(self.failed("read the lease"))?;
        content.ok_or_else(|| Error::Io {
            op: "read the lease",
            path: self.uri.clone().into(),
            source: std::io::Error::other(format!("lease {number} is not one this crate wrote")),
        })
    }

    /// Takes the lease: the next number after the newest, if that one has expired or
    /// is this writer's (a few tries: racing takers).
    async fn take(&self) -> Result<()> {
        for _ in 0..3 {
            let next = match self.newest().await? {
                None => 1,
                Some((number, content)) => {
                    let left = content.expires.duration_since(SystemTime::now());
                    if let (Ok(left), false) = (left, content.holder == self.holder) {
                        return Err(Error::LeaseHeld {
                            lease: self.uri.clone(),
                            holder: content.holder,
                            expires_in: left,
                        });
                    }
                    number + 1
                }
            };
            match self.create(next, SystemTime::now() + self.term).await {
                Ok(held) => {
                    self.now_holds(self.held.lock().await, held).await;
                    return Ok(());
                }
                // another taker won the race: look again
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(self.failed("take the lease")(e)),
            }
        }
        Err(Error::Io {
            op: "take the lease",
            path: self.uri.clone().into(),
            source: std::io::Error::other("other writers kept taking it first"),
        })
    }

    /// Removes the lease objects before `number` (best effort: a left-over one is
    /// only listed, never believed, as a newer one exists).
    async fn forget_before(&self, number: u64) {
        for old in number.saturating_sub(2).max(1)..number {
            let _ = self.store.delete(&self.object(old)).await;
        }
    }

    /// Records the lease object this handle now holds (taken, renewed or released)
    /// under the guard of its changes, then, the guard let go, removes the objects
    /// before it.
    async fn now_holds(&self, mut guard: tokio::sync::MutexGuard<'_, Held>, held: Held) {
        *guard = held;
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = held;
        drop(guard);
        self.forget_before(held.number).await;
    }

    /// Returns `Ok` while this handle holds the lease. Once half of its term has
    /// passed, a renewal starts on a task of its own (`shared` is where this lease
    /// lives), so no caller waits for the store while the lease holds; after the
    /// expiry the renewal is made before answering ([`Error::LeaseSuspended`] while
    /// the store does not take it). Once another writer has taken the lease, every
    /// call fails with [`Error::LeaseLost`].
    pub(crate) async fn ensure(&self, shared: &Arc<tokio::sync::OnceCell<Lease>>) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error(None));
        }
        let known = *self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        if now < known.expires - self.term / 2 {
            return Ok(());
        }
        if now < known.expires {
            self.renew_behind(shared);
            return Ok(());
        }
        self.renew().await
    }

    /// Starts a renewal on a task of its own, unless one runs or one started less than
    /// [`RENEW_GAP`] ago.
    fn renew_behind(&self, shared: &Arc<tokio::sync::OnceCell<Lease>>) {
        if self.renewing.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let mut last = self.last_try.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < RENEW_GAP) {
                self.renewing.store(false, Ordering::SeqCst);
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            if let Some(lease) = shared.get() {
                // a failure is seen by the next `ensure`: for good (`lost`), or the
                // lease expiring unrenewed
                let _seen_by_the_next_ensure = lease.renew().await;
                lease.renewing.store(false, Ordering::SeqCst);
            }
        });
    }

    /// Renews the lease (unless a renewal that went through meanwhile makes it
    /// unnecessary): creates the next lease object, and fails for good if another
    /// writer created one first.
    async fn renew(&self) -> Result<()> {
        let held = self.held.lock().await;
        // a renewal that started before a release (or a loss) takes nothing back
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error(None));
        }
        if SystemTime::now() < held.expires - self.term / 2 {
            return Ok(());
        }
        let next = held.number + 1;
        match self.create(next, SystemTime::now() + self.term).await {
            Ok(renewed) => {
                // a lease object removed as old can be created again: the renewal
                // holds only if no newer lease exists (another writer's, taken over
                // while this one could not reach the store)
                match self.newest().await? {
                    Some((newest, content)) if newest > next => {
                        self.lost.store(true, Ordering::SeqCst);
                        Err(self.lost_error(Some(content.holder)))
                    }
                    _ => {
                        self.now_holds(held, renewed).await;
                        Ok(())
                    }
                }
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.lost.store(true, Ordering::SeqCst);
                let holder = self.newest().await.ok().flatten().map(|(_, c)| c.holder);
                Err(self.lost_error(holder))
            }
            // a transient failure: the lease may still be ours, not yet expired
            Err(e) if SystemTime::now() < held.expires => Err(self.failed("renew the lease")(e)),
            // expired while the store did not answer: nothing is acknowledged until
            // a renewal goes through, which it does unless another writer took the
            // lease meanwhile (then the create above finds its object: lost for good)
            Err(e) => Err(Error::LeaseSuspended {
                lease: self.uri.clone(),
                expired_ago: SystemTime::now()
                    .duration_since(held.expires)
                    .unwrap_or_default(),
                reason: e.to_string(),
            }),
        }
    }

    /// Gives the lease up: creates the next lease object naming this writer with an
    /// expiry of now, so that another writer takes it at once rather than after the
    /// term (and this writer, restarted, as it always may). From here on this handle
    /// writes nothing ([`Error::LeaseLost`]). Nothing to give up when it was lost; a
    /// store that does not answer leaves the lease to expire with its term.
    pub(crate) async fn release(&self) -> Result<()> {
        let held = self.held.lock().await;
        if self.lost.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.released.store(true, Ordering::SeqCst);
        let next = held.number + 1;
        match self.create(next, SystemTime::now()).await {
            Ok(released) => {
                self.now_holds(held, released).await;
                Ok(())
            }
            // another writer took the lease meanwhile: nothing of it is ours to give
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.failed("release the lease")(e)),
        }
    }

    fn lost_error(&self, holder: Option<String>) -> Error {
        let holder = if self.released.load(Ordering::SeqCst) {
            "no one: this handle released it".to_owned()
        } else {
            holder.unwrap_or_else(|| "unknown".to_owned())
        };
        Error::LeaseLost {
            lease: self.uri.clone(),
            holder,
        }
    }
}

//! The object store Lance commits a dataset through ([`CommitStores`]): every
//! manifest this handle writes must carry the version it expects (one writer per
//! dataset, also across machines), and on a local dataset every change is gated by
//! the bucket's [`Disk`] (refused while a simulated power is off) and each manifest is
//! made durable in the order the `store` module states.
//!
//! Invariants:
//! - a manifest is written only at the version [`Versions`] expects: the one after the
//!   last version this handle saw or wrote. Lance rebases a commit that lost a race
//!   onto the winner's version; here that commit is refused instead, so a second
//!   writer can never interleave its records with this handle's offsets;
//! - on a local dataset, when Lance returns from a commit, its manifest, every file it
//!   names and every directory entry on the way to them are durable. (Lance writes
//!   data and transaction files with its own local writer; they are found and fsynced
//!   by `synced` before the manifest is written.)

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{BoxStream, StreamExt};
use lance_io::object_store::WrappingObjectStore;
use object_store::list::PaginatedListStore;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::manifests::version_of;
use super::synced::SyncedFiles;
use super::{Disk, ManifestFault};

/// The manifest versions a handle may write: `next`, then the one after, and so on.
#[derive(Debug)]
pub(crate) struct Versions(Mutex<VersionState>);

impl Default for Versions {
    /// No dataset yet: its first manifest is version 1.
    fn default() -> Self {
        Self(Mutex::new(VersionState {
            next: 1,
            outcome_unknown: None,
            sent: None,
        }))
    }
}

#[derive(Debug, Clone)]
struct VersionState {
    /// The version the next manifest must have.
    next: u64,
    /// A manifest put at this version failed without a clear answer: it may have
    /// landed.
    outcome_unknown: Option<u64>,
    /// What that put sent, when it was a put (not a rename): whether the manifest
    /// found at that version is this handle's is a comparison of bytes.
    sent: Option<SentManifest>,
}

/// A manifest this handle put without a clear answer: where, and a digest of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentManifest {
    version: u64,
    /// The object the put named.
    pub(crate) location: StorePath,
    crc: u32,
    len: u64,
}

impl SentManifest {
    fn new(version: u64, location: &StorePath, payload: &PutPayload) -> Self {
        let mut crc = crc32fast::Hasher::new();
        for chunk in payload.iter() {
            crc.update(chunk);
        }
        Self {
            version,
            location: location.clone(),
            crc: crc.finalize(),
            len: payload.content_length() as u64,
        }
    }

    /// Whether `bytes`, read back from [`Self::location`], are what was sent.
    pub(crate) fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.len && crc32fast::hash(bytes) == self.crc
    }
}

impl Versions {
    fn state(&self) -> std::sync::MutexGuard<'_, VersionState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The dataset is at `version` (0: no dataset yet), as this handle now knows it
    /// (opened, reloaded, or a commit applied).
    pub(crate) fn seen(&self, version: u64) {
        let mut st = self.state();
        // a put of this handle past `version` whose outcome is unknown may land yet (a
        // cancelled local write runs on to its end): it stays possibly this handle's
        let outcome_unknown = st.outcome_unknown.filter(|&u| u > version);
        let sent = st.sent.take().filter(|s| s.version > version);
        *st = VersionState {
            next: version + 1,
            outcome_unknown,
            sent,
        };
    }

    /// Whether `latest`, found on reloading the dataset, holds a commit this handle
    /// did not write: anything past the last version it wrote, except one whose put
    /// failed without an answer.
    pub(crate) fn foreign(&self, latest: u64) -> bool {
        let st = self.state();
        latest + 1 != st.next && st.outcome_unknown != Some(latest)
    }

    /// The manifest this handle put at `version` without a clear answer, if it was a
    /// put: the caller compares it with the manifest found there (another writer may
    /// have taken the version the put never reached).
    pub(crate) fn sent_at(&self, version: u64) -> Option<SentManifest> {
        let st = self.state();
        st.sent
            .clone()
            .filter(|s| s.version == version && st.outcome_unknown == Some(version))
    }

    /// The version the next commit of this handle must have.
    pub(crate) fn next(&self) -> u64 {
        self.state().next
    }

    /// Refuses a manifest at any version but the expected one; an accepted one is
    /// of unknown outcome until [`Versions::put`] records its outcome (a put whose future is
    /// dropped may still land: a local write runs on to its end on a blocking thread).
    /// Returns whether an earlier put at this version was already of unknown outcome (it may have
    /// landed: a put that now finds the version taken may be finding that one).
    fn check(
        &self,
        version: u64,
        location: &StorePath,
        sent: Option<SentManifest>,
    ) -> object_store::Result<bool> {
        let mut st = self.state();
        let next = st.next;
        if version == next {
            let retried = st.outcome_unknown == Some(version);
            st.outcome_unknown = Some(version);
            st.sent = sent;
            return Ok(retried);
        }
        Err(store_error(
            location,
            format_args!(
                "refused: this writer expects to commit version {next}, and version {} \
                 means another writer committed since it last looked",
                version
            ),
        ))
    }

    /// The outcome of a manifest put at `version` (`retried`: an earlier put there
    /// was of unknown outcome).
    fn put<T>(&self, version: u64, retried: bool, result: &object_store::Result<T>) {
        let mut st = self.state();
        match result {
            Ok(_) => {
                st.next = version + 1;
                st.outcome_unknown = None;
                st.sent = None;
            }
            // the version exists: another writer's, unless an earlier put of this
            // handle there may have landed (Lance reports the conflict either way)
            Err(object_store::Error::AlreadyExists { .. }) if !retried => {
                st.outcome_unknown = None;
                st.sent = None;
            }
            Err(_) => st.outcome_unknown = Some(version),
        }
    }
}

/// The version a manifest at `location` carries, if `location` is a manifest in
/// `_versions/` (either of Lance's naming schemes, see [`version_of`]).
fn manifest_version(location: &StorePath) -> Option<u64> {
    let mut parts = location.parts().collect::<Vec<_>>().into_iter().rev();
    let name = parts.next()?;
    let dir = parts.next()?;
    if dir.as_ref() != "_versions" {
        return None;
    }
    version_of(name.as_ref())
}

/// A local dataset's part of the commit stores: its directory and its durable files.
#[derive(Debug)]
struct Local {
    /// The dataset's directory.
    root: PathBuf,
    synced: Arc<SyncedFiles>,
}

/// Calls made through a dataset's object stores, by kind.
#[derive(Debug, Default)]
struct Calls {
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
}

/// What the object stores of one dataset share.
#[derive(Debug)]
struct Shared {
    disk: Arc<dyn Disk>,
    calls: Calls,
    /// `None` for a remote dataset.
    local: Option<Local>,
    versions: Arc<Versions>,
}

/// Wraps the object stores Lance opens for one dataset (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct CommitStores(Arc<Shared>);

impl CommitStores {
    /// The stores of a local dataset in `root`.
    pub(crate) fn local(
        disk: Arc<dyn Disk>,
        root: PathBuf,
        synced: Arc<SyncedFiles>,
        versions: Arc<Versions>,
    ) -> Self {
        Self(Arc::new(Shared {
            disk,
            calls: Calls::default(),
            local: Some(Local { root, synced }),
            versions,
        }))
    }

    /// The stores of a remote dataset (`disk` only injects faults there).
    pub(crate) fn remote(disk: Arc<dyn Disk>, versions: Arc<Versions>) -> Self {
        Self(Arc::new(Shared {
            disk,
            calls: Calls::default(),
            local: None,
            versions,
        }))
    }

    /// The calls made through these stores since they were made.
    pub(crate) fn calls(&self) -> StoreCalls {
        let c = &self.0.calls;
        StoreCalls {
            puts: c.puts.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
        }
    }
}

/// Calls a bucket made through Lance's object store since it opened: for data at a
/// URI each is a request to the store (a put of a large file may be several, as a
/// multipart upload: counted once); a local dataset writes its data files around the
/// object store, so there they count manifests and reads only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCalls {
    /// Puts (whole objects, multipart uploads started, renames and copies).
    pub puts: u64,
    /// Gets (whole objects, and reads of byte ranges: one per call).
    pub gets: u64,
    /// Listings.
    pub lists: u64,
    /// Deletions (one per object).
    pub deletes: u64,
}

impl WrappingObjectStore for CommitStores {
    fn wrap(&self, _prefix: &str, original: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(Durable {
            inner: original,
            shared: Arc::clone(&self.0),
        })
    }

    fn wrap_paginated(
        &self,
        _prefix: &str,
        original: Arc<dyn PaginatedListStore>,
    ) -> Option<Arc<dyn PaginatedListStore>> {
        // listings only read: they need not pass through here
        Some(original)
    }
}

#[derive(Debug)]
struct Durable {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
}

impl fmt::Display for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commits({})", self.inner)
    }
}

fn store_error(what: impl fmt::Display, source: impl fmt::Display) -> object_store::Error {
    object_store::Error::Generic {
        store: "Commits",
        source: format!("{what}: {source}").into(),
    }
}

impl Shared {
    /// The file-system path of an object of a local dataset.
    fn local(&self, location: &StorePath) -> Option<(PathBuf, &Local)> {
        let local = self.local.as_ref()?;
        let path = Path::new("/").join(location.as_ref());
        path.starts_with(&local.root).then_some((path, local))
    }

    /// Writes the manifest at `location` (version `version`) with `write`, after
    /// the check of its version, and on a local dataset in the durable order.
    async fn commit<T>(
        &self,
        location: &StorePath,
        version: u64,
        sent: Option<SentManifest>,
        write: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let retried = self.versions.check(version, location, sent)?;
        let local = self.local(location);
        let mut new_dirs = Vec::new();
        if let Some((path, local)) = &local {
            self.before_manifest(local, path).await?;
            new_dirs = missing_dirs(path);
        }
        let fault = self.disk.manifest_fault(version);
        let result = match fault {
            Some(ManifestFault::BeforeSent) => Err(store_error(
                location,
                "the put failed before it was sent (injected)",
            )),
            _ => write.await,
        };
        let result = match (fault, result) {
            (Some(ManifestFault::ReplyLost), Ok(_)) => Err(store_error(
                location,
                "the put landed and its reply was lost (injected)",
            )),
            (_, result) => result,
        };
        self.versions.put(version, retried, &result);
        let written = result?;
        if let Some((path, local)) = &local {
            self.after_manifest(local, path, new_dirs).await?;
        }
        Ok(written)
    }

    fn begin(&self, what: &StorePath) -> object_store::Result<super::Op> {
        self.disk
            .begin()
            .map_err(|e| store_error(format_args!("change {what}"), e))
    }

    /// Everything the manifest at `path` may name, made durable before it is written.
    async fn before_manifest(&self, local: &Local, path: &Path) -> object_store::Result<()> {
        let synced = Arc::clone(&local.synced);
        tokio::task::spawn_blocking(move || synced.sync_new())
            .await
            .map_err(|e| store_error(path.display(), e))?
            .map_err(|e| store_error(path.display(), e))
    }

    /// The manifest at `path` (written, with the directories in `new_dirs`) and its
    /// name made durable.
    async fn after_manifest(
        &self,
        local: &Local,
        path: &Path,
        new_dirs: Vec<PathBuf>,
    ) -> object_store::Result<()> {
        let disk = Arc::clone(&self.disk);
        let synced = Arc::clone(&local.synced);
        let file = path.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            disk.sync_file(&file)?;
            let parents = new_dirs.iter().chain([&file]).filter_map(|p| p.parent());
            for dir in parents.rev() {
                disk.sync_dir(dir)?;
            }
            // the flush's walk after the commit need not fsync them again
            synced.mark_synced(new_dirs.into_iter().chain([file]));
            Ok(())
        })
        .await
        .map_err(|e| store_error(path.display(), e))?
        .map_err(|e| store_error(format_args!("fsync {}", path.display()), e))
    }
}

/// The directories a write to `path` creates, outermost first.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    missing
}

#[async_trait::async_trait]
impl ObjectStore for Durable {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.shared.calls.puts.fetch_add(1, Ordering::Relaxed);
        let _op = self.shared.begin(location)?;
        match manifest_version(location) {
            Some(version) => {
                let sent = SentManifest::new(version, location, &payload);
                let put = self.inner.put_opts(location, payload, opts);
                self.shared.commit(location, version, Some(sent), put).await
            }
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.shared.calls.puts.fetch_add(1, Ordering::Relaxed);
        let _op = self.shared.begin(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.shared.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.shared.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        let shared = Arc::clone(&self.shared);
        // a removal asked for once the power is cut does not happen
        let gated = locations
            .map(move |location| {
                let location = location?;
                shared.calls.deletes.fetch_add(1, Ordering::Relaxed);
                shared.begin(&location)?;
                Ok(location)
            })
            .boxed();
        self.inner.delete_stream(gated)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.shared.calls.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.shared.calls.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.shared.calls.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.shared.calls.puts.fetch_add(1, Ordering::Relaxed);
        let _op = self.shared.begin(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.shared.calls.puts.fetch_add(1, Ordering::Relaxed);
        let _op = self.shared.begin(to)?;
        let rename = self.inner.rename_opts(from, to, options);
        match manifest_version(to) {
            Some(version) => self.shared.commit(to, version, None, rename).await,
            None => rename.await,
        }
    }
}

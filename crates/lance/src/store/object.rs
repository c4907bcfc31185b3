//! The object store Lance commits a local dataset through: the local file system,
//! with every change gated by the bucket's [`Disk`] (refused while a simulated power
//! is off) and each manifest made durable in the order the `store` module states.
//!
//! Invariant: when Lance returns from a commit on a dataset opened through
//! [`DurableStores`], the commit's manifest, every file it names and every directory
//! entry on the way to them are durable. (Lance writes data and transaction files
//! with its own local writer; they are found and fsynced by `synced` before the
//! manifest is written.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use lance_io::object_store::WrappingObjectStore;
use object_store::list::PaginatedListStore;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::Disk;
use super::synced::SyncedFiles;

/// What the object stores of one dataset share.
#[derive(Debug)]
struct Shared {
    disk: Arc<dyn Disk>,
    /// The dataset's directory.
    root: PathBuf,
    synced: Arc<SyncedFiles>,
}

/// Wraps the object stores Lance opens for one local dataset (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct DurableStores(Arc<Shared>);

impl DurableStores {
    pub(crate) fn new(disk: Arc<dyn Disk>, root: PathBuf, synced: Arc<SyncedFiles>) -> Self {
        Self(Arc::new(Shared { disk, root, synced }))
    }
}

impl WrappingObjectStore for DurableStores {
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
        write!(f, "Durable({})", self.inner)
    }
}

fn store_error(what: impl fmt::Display, source: impl fmt::Display) -> object_store::Error {
    object_store::Error::Generic {
        store: "Durable",
        source: format!("{what}: {source}").into(),
    }
}

impl Shared {
    /// The file-system path of an object of this dataset.
    fn local(&self, location: &StorePath) -> Option<PathBuf> {
        let path = Path::new("/").join(location.as_ref());
        path.starts_with(&self.root).then_some(path)
    }

    fn begin(&self, what: &StorePath) -> object_store::Result<super::Op> {
        self.disk
            .begin()
            .map_err(|e| store_error(format_args!("change {what}"), e))
    }

    /// Everything the manifest at `path` may name, made durable before it is written.
    async fn before_manifest(&self, path: &Path) -> object_store::Result<()> {
        let synced = Arc::clone(&self.synced);
        tokio::task::spawn_blocking(move || synced.sync_new())
            .await
            .map_err(|e| store_error(path.display(), e))?
            .map_err(|e| store_error(path.display(), e))
    }

    /// The manifest at `path` (written, with the directories in `new_dirs`) and its
    /// name made durable.
    async fn after_manifest(
        &self,
        path: &Path,
        new_dirs: Vec<PathBuf>,
    ) -> object_store::Result<()> {
        let disk = Arc::clone(&self.disk);
        let synced = Arc::clone(&self.synced);
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

fn is_manifest(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "manifest")
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "_versions")
}

#[async_trait::async_trait]
impl ObjectStore for Durable {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let _op = self.shared.begin(location)?;
        let Some(path) = self.shared.local(location).filter(|p| is_manifest(p)) else {
            return self.inner.put_opts(location, payload, opts).await;
        };
        self.shared.before_manifest(&path).await?;
        let new_dirs = missing_dirs(&path);
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.shared.after_manifest(&path, new_dirs).await?;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let _op = self.shared.begin(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
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
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let _op = self.shared.begin(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let _op = self.shared.begin(to)?;
        let Some(path) = self.shared.local(to).filter(|p| is_manifest(p)) else {
            return self.inner.rename_opts(from, to, options).await;
        };
        self.shared.before_manifest(&path).await?;
        let new_dirs = missing_dirs(&path);
        self.inner.rename_opts(from, to, options).await?;
        self.shared.after_manifest(&path, new_dirs).await
    }
}

//! The durability-relevant file operations of this crate on a local bucket, behind
//! one seam: [`Disk`].
//!
//! What goes through it: every fsync of a file or directory (`synced`, and the
//! object store Lance commits through, `object`), every write of the seals file
//! (`seals`), and the changes Lance makes through its object store (gated: refused
//! once a simulated power is off). Lance writes data and transaction files with its
//! own local writer, outside any object store; those are found by walking the
//! dataset. Reads do not go through it: Lance reads data files through its own
//! readers, and the seal check reads them with `std::fs` (a power loss cannot change
//! what a read sees of fsynced files). The same code runs on the real disk ([`RealDisk`]) and on [`SimDisk`],
//! which keeps what was fsynced apart from what was only written and, at a simulated
//! power loss, drops, cuts or tears the rest and forgets directory entries that were
//! not fsynced.
//!
//! Ordering kept on a local dataset (why a commit survives a power loss):
//! 1. before Lance writes a manifest, every file of the dataset not known durable
//!    (the data, deletion and transaction files the manifest names) is fsynced, then
//!    every directory holding a new name: a manifest never names a file a power loss
//!    can take away;
//! 2. right after, the manifest and its directory are fsynced: when Lance returns
//!    from a commit, the commit is durable;
//! 3. seals are appended and fsynced after the files they seal (`seals`), before a
//!    flush is reported durable (and so before a WAL is checkpointed).

pub(crate) mod lease;
pub(crate) mod manifests;
pub(crate) mod object;
pub(crate) mod seals;
mod sim;
pub(crate) mod synced;

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use sim::{SimCrash, SimDisk, SyncKind};

use std::collections::HashMap;

use lance_io::object_store::{ObjectStoreParams, StorageOptionsAccessor, WrappingObjectStore};

use crate::error::Result;
use crate::store::lease::Lease;
use crate::store::object::{CommitStores, Versions};
use crate::store::seals::Seals;
use crate::store::synced::SyncedFiles;
use crate::threads::blocking;

/// The file operations of a bucket's local storage. Paths are absolute file-system
/// paths inside the bucket's storage path.
///
/// Contract: bytes written are durable only after `sync_file` of their file, and a
/// name created, renamed or removed in a directory only after `sync_dir` of that
/// directory.
pub trait Disk: Send + Sync + Debug {
    /// Starts a change of the disk; the returned guard lasts as long as the change.
    /// Fails while the (simulated) power is off.
    fn begin(&self) -> io::Result<Op> {
        Ok(Op::default())
    }
    /// Makes the bytes of the file at `path` durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of the directory `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Cuts the file at `path` to `offset` bytes (creating it empty if absent) and
    /// writes `bytes` there. Not durable until `sync_file`.
    fn write_from(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`. Not durable until `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Writes `bytes` at `offset` of the existing file at `path` without cutting it
    /// (into space written before, e.g. preallocated zeros). Not durable until
    /// `sync_data` (or `sync_file`). A power loss keeps what was synced before
    /// `offset`, and of the rest at most a prefix (so write only at the end of what
    /// matters, as into a log's preallocated tail).
    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes the bytes of the file at `path` durable when its size did not change
    /// since it was last synced (an `fdatasync`: no metadata journal commit).
    fn sync_data(&self, path: &Path) -> io::Result<()> {
        self.sync_file(path)
    }
    /// [`Disk::write_at`] through `file`, an open descriptor of `path` (a disk that
    /// keeps a ledger by path, as [`SimDisk`] does, may ignore it).
    fn write_at_file(&self, file: &File, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _ = file;
        self.write_at(path, offset, bytes)
    }
    /// [`Disk::sync_data`] through `file`, an open descriptor of `path`.
    fn sync_data_file(&self, file: &File, path: &Path) -> io::Result<()> {
        let _ = file;
        self.sync_data(path)
    }
    /// A fault to inject into the put of the dataset's manifest of `version` (local
    /// or remote): how tests make a commit fail with an unclear outcome. None on a
    /// real disk.
    fn manifest_fault(&self, version: u64) -> Option<ManifestFault> {
        let _ = version;
        None
    }
}

/// A fault injected into a manifest put (see [`Disk::manifest_fault`]). Both look
/// the same to the writer, an error: whether the commit landed is for the next flush
/// to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFault {
    /// The put fails before it is sent: the manifest is not written.
    BeforeSent,
    /// The put lands, and its reply is lost.
    ReplyLost,
}

/// A change of the disk in progress (see [`Disk::begin`]); ends when dropped.
#[derive(Debug, Default)]
pub struct Op(Option<Arc<AtomicUsize>>);

impl Op {
    /// Counts a change in `running` until the guard drops.
    pub(crate) fn counted(running: &Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::SeqCst);
        Self(Some(Arc::clone(running)))
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let Some(running) = &self.0 {
            running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn write_from(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all_at(bytes, offset)
    }

    fn sync_data(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_data()
    }

    fn write_at_file(&self, file: &File, _: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(bytes, offset)
    }

    fn sync_data_file(&self, file: &File, _: &Path) -> io::Result<()> {
        file.sync_data()
    }
}

/// `path` made absolute (against the current directory) with `.` and `..` resolved
/// by name, as Lance's local store names the objects it writes.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in full.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The storage of a bucket on a local disk: which files are durable (`synced`) and
/// the seals of the data files (`seals`). A remote dataset has neither.
#[derive(Debug, Clone)]
pub(crate) struct LocalFiles {
    pub(crate) synced: Arc<SyncedFiles>,
    pub(crate) seals: Arc<Seals>,
}

/// Where a bucket's dataset lives and how Lance reaches it: the object stores every
/// commit goes through, the versions this handle may commit, and for a local
/// dataset its files.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    pub(crate) local: Option<LocalFiles>,
    pub(crate) stores: CommitStores,
    pub(crate) versions: Arc<Versions>,
    /// Options of the object store (credentials, endpoint, ...), as Lance names them.
    pub(crate) options: HashMap<String, String>,
    /// A remote dataset's writer lease, taken by the first write (see `lease`).
    pub(crate) lease: Arc<tokio::sync::OnceCell<Lease>>,
}

impl Storage {
    /// The storage of the dataset `uri` inside the bucket's `root`, on `disk` (for a
    /// local dataset, the seals file is read now).
    pub(crate) fn open(
        root: &Path,
        uri: &str,
        remote: bool,
        disk: Arc<dyn Disk>,
        options: HashMap<String, String>,
    ) -> Result<Self> {
        let versions = Arc::new(Versions::default());
        if remote {
            return Ok(Self {
                local: None,
                stores: CommitStores::remote(disk, Arc::clone(&versions)),
                versions,
                options: remote_options(&options),
                lease: Arc::default(),
            });
        }
        // the absolute path Lance's local store writes to (it names objects so)
        let dir = absolute(Path::new(uri));
        let synced = Arc::new(SyncedFiles::new(dir.clone(), Arc::clone(&disk)));
        let stores = CommitStores::local(
            Arc::clone(&disk),
            dir,
            Arc::clone(&synced),
            Arc::clone(&versions),
        );
        let seals = Arc::new(Seals::load(root, Path::new(uri), disk)?);
        Ok(Self {
            local: Some(LocalFiles { synced, seals }),
            stores,
            versions,
            options,
            lease: Arc::default(),
        })
    }

    /// The object-store parameters of the dataset: written through [`CommitStores`],
    /// with the storage options given.
    pub(crate) fn params(&self) -> ObjectStoreParams {
        ObjectStoreParams {
            object_store_wrapper: Some(
                Arc::new(self.stores.clone()) as Arc<dyn WrappingObjectStore>
            ),
            storage_options_accessor: accessor(&self.options),
            ..ObjectStoreParams::default()
        }
    }
}

/// The bounds every request to an object store gets unless the storage options say
/// otherwise: `(key, value)` as the options name them. Without them a store that
/// hangs holds a request for the client's defaults, 30 s a try and retries for up to
/// 180 s; with them a hung store is an error within about `timeout` +
/// `client_retry_timeout`.
pub const STORE_TIMEOUTS: [(&str, &str); 3] = [
    // one try of one request, its body included (Lance writes large files in parts)
    ("timeout", "10s"),
    ("connect_timeout", "5s"),
    // no retry of a request starts later than this after its first try
    ("client_retry_timeout", "30"),
];

/// The storage options of data at a URI: the caller's, with [`STORE_TIMEOUTS`] for
/// the keys they leave out.
pub(crate) fn remote_options(options: &HashMap<String, String>) -> HashMap<String, String> {
    let mut all = options.clone();
    for (key, value) in STORE_TIMEOUTS {
        let given = all.keys().any(|k| {
            let k = k.to_ascii_lowercase();
            k == key || k == format!("aws_{key}")
        });
        if !given {
            all.insert(key.to_owned(), value.to_owned());
        }
    }
    all
}

/// Lance's form of a bucket's storage options (none: the `AWS_*` variables alone).
pub(crate) fn accessor(options: &HashMap<String, String>) -> Option<Arc<StorageOptionsAccessor>> {
    (!options.is_empty())
        .then(|| Arc::new(StorageOptionsAccessor::with_static_options(options.clone())))
}

/// The disk of a bucket's local storage: the real one unless a test gives another.
pub(crate) fn real() -> Arc<dyn Disk> {
    Arc::new(RealDisk)
}

/// The names of the directories directly under `uri`, data at an object-store URI
/// (`s3://…`), reached with `storage_options` as a bucket's are: how a tool finds a
/// topic's buckets there. A URI with nothing under it has none.
pub async fn list_dirs(
    uri: &str,
    storage_options: &HashMap<String, String>,
) -> Result<Vec<String>> {
    let params = ObjectStoreParams {
        storage_options_accessor: accessor(&remote_options(storage_options)),
        ..ObjectStoreParams::default()
    };
    let registry = Arc::new(lance_io::object_store::ObjectStoreRegistry::default());
    let (store, base) =
        lance_io::object_store::ObjectStore::from_uri_and_params(registry, uri, &params)
            .await
            .map_err(crate::error::Error::lance("reach", uri))?;
    let listed = store
        .inner
        .list_with_delimiter(Some(&base))
        .await
        .map_err(crate::error::Error::store("list", uri))?;
    let mut names: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Whether a sync seals the new data files it fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    /// Seals them: this handle wrote them (a commit, a compaction, a reconcile
    /// taking its own landed commit).
    NewFiles,
    /// Leaves them unsealed: found at open, written by a handle a crash cut before
    /// its seal (read unverified, rows still checked).
    Nothing,
}

/// fsyncs the files of a local dataset not fsynced yet (`local` tracks them; `None`:
/// a remote dataset, nothing to do) and, as `seal` says, seals the new data files
/// among them. Returns how many files were made durable since the last call.
pub(crate) async fn sync_files(local: Option<&LocalFiles>, seal: Seal, uri: &str) -> Result<usize> {
    let Some(local) = local else {
        return Ok(0);
    };
    let tracker = Arc::clone(&local.synced);
    let seals = (seal == Seal::NewFiles).then(|| Arc::clone(&local.seals));
    let done = blocking("fsync the files of", uri, move || {
        tracker.sync_new()?;
        let fresh = tracker.take_fresh();
        if let Some(seals) = seals {
            seals.seal_new(&fresh)?;
        }
        Ok(fresh.len())
    })
    .await
    .and_then(|inner| inner);
    if done.is_err() {
        // the files taken as fresh may not be sealed (a failed fsync of the seals),
        // or the task is gone with what it knew: start over, so the next sync fsyncs
        // every file again and seals those still without a seal
        local.synced.forget();
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_to_a_store_are_bounded_unless_the_options_say_otherwise() {
        let none = remote_options(&HashMap::new());
        for (key, value) in STORE_TIMEOUTS {
            assert_eq!(none.get(key).map(String::as_str), Some(value), "{key}");
        }
        let given: HashMap<String, String> = [("TIMEOUT", "2m"), ("aws_connect_timeout", "1s")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let kept = remote_options(&given);
        assert_eq!(kept.get("TIMEOUT").map(String::as_str), Some("2m"));
        assert!(!kept.contains_key("timeout") && !kept.contains_key("connect_timeout"));
        assert_eq!(
            kept.get("client_retry_timeout").map(String::as_str),
            Some("30")
        );
    }
}

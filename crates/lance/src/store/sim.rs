//! [`SimDisk`]: the real file system with a ledger of what was not made durable, so
//! a test can cut the power and leave on disk only what a power loss would.
//!
//! A disk simulates the tree under one directory. What was there at power-on is
//! durable; every file or directory that appears later is new, with nothing of it
//! durable until fsynced: the ledger keeps, per file, how many of its bytes were
//! fsynced and whether its name in its directory was, and per new directory whether
//! its name was. Files Lance writes itself (its local writer bypasses any object
//! store) are found by that walk, so nothing written escapes the simulation.
//! [`SimDisk::crash`] first refuses every later change through the disk (and waits
//! for the ones running), then, per the [`SimCrash`] mode and a seed: removes files
//! and directories whose names were not fsynced (or restores the file a rename
//! replaced), and cuts the unsynced bytes of the others (all of them, a random part,
//! or a random part with its last bytes garbled). Removed names that were not
//! fsynced are not brought back (Lance's cleanup removes files no version needs;
//! bringing them back changes nothing Lance reads).
//!
//! [`SimDisk::skip_syncs`] turns one kind of fsync ([`SyncKind`]) into a no-op in the
//! ledger: the fault a mutation check injects to show the simulation catches a
//! missing fsync. [`SimDisk::fail_syncs`] makes one kind of fsync fail (an `EIO` from a
//! dying disk) until it is turned off, making nothing durable meanwhile.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Disk, Op, RealDisk};
use crate::store::seals::SUMS_FILE;

/// What a simulated power loss keeps of the bytes not fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimCrash {
    /// Nothing: every unsynced byte and name is gone.
    DropUnsynced,
    /// A random prefix of each file's unsynced bytes; each unsynced name kept or not.
    KeepPrefix,
    /// As `KeepPrefix`, with the last bytes kept of each file garbled.
    TearLastWrite,
}

/// A kind of fsync: what [`SimDisk::skip_syncs`] ignores (a mutation check: the fault
/// of leaving that fsync out of the code) or [`SimDisk::fail_syncs`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// fsyncs of the dataset's data files (`data/*.lance`).
    DataFiles,
    /// fsyncs of the dataset's manifest directory (`_versions/`).
    ManifestDir,
    /// fsyncs of the seals file.
    Seals,
}

impl std::str::FromStr for SyncKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "data-files" => Ok(Self::DataFiles),
            "manifest-dir" => Ok(Self::ManifestDir),
            "seals" => Ok(Self::Seals),
            _ => Err(format!(
                "unknown fsync {s:?}: valid values are data-files, manifest-dir, seals"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FileState {
    /// Bytes from the start known durable.
    synced_len: u64,
    /// Whether the file's name in its directory is durable.
    named: bool,
}

const NEW_FILE: FileState = FileState {
    synced_len: 0,
    named: false,
};

#[derive(Debug, Default)]
struct Ledger {
    /// Files and directories present at power-on (durable).
    durable: HashSet<PathBuf>,
    /// Files changed since power-on.
    files: HashMap<PathBuf, FileState>,
    /// Directories created since power-on whose name was fsynced.
    named_dirs: HashSet<PathBuf>,
    /// Durable contents of files a rename replaced, restored if the rename is lost.
    replaced: HashMap<PathBuf, Vec<u8>>,
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    ledger: Mutex<Ledger>,
    off: AtomicBool,
    running: Arc<AtomicUsize>,
    skipped: Mutex<Option<SyncKind>>,
    failing: Mutex<Option<SyncKind>>,
}

/// The real file system under one directory, with simulated power losses (see the
/// module docs). Clones share one ledger.
#[derive(Debug, Clone)]
pub struct SimDisk(Arc<State>);

/// The switch behind `slot`, poisoned or not.
fn lock(slot: &Mutex<Option<SyncKind>>) -> MutexGuard<'_, Option<SyncKind>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every file and directory under `root` (none if it is absent).
fn walk(root: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                todo.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

impl SimDisk {
    /// Simulates the tree under `root` (which may not exist yet), power on: what is
    /// there now is durable.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let disk = Self(Arc::new(State {
            root: crate::store::absolute(&root.into()),
            ledger: Mutex::new(Ledger::default()),
            off: AtomicBool::new(false),
            running: Arc::new(AtomicUsize::new(0)),
            skipped: Mutex::new(None),
            failing: Mutex::new(None),
        }));
        disk.power_on();
        disk
    }

    /// Ignores every later fsync of one kind (`None`: none).
    pub fn skip_syncs(&self, kind: Option<SyncKind>) {
        *lock(&self.0.skipped) = kind;
    }

    /// Every later fsync of one kind fails with an I/O error and makes nothing
    /// durable (`None`: none fails); the disk's other operations work.
    pub fn fail_syncs(&self, kind: Option<SyncKind>) {
        *lock(&self.0.failing) = kind;
    }

    /// What becomes of an fsync of `path`, of `kind` (`None`: a kind no switch names):
    /// an error while that kind fails, `true` (ignored) while it is skipped.
    fn fault(&self, path: &Path, kind: Option<SyncKind>) -> io::Result<bool> {
        if kind.is_none() {
            return Ok(false);
        }
        if *lock(&self.0.failing) == kind {
            return Err(io::Error::other(format!(
                "simulated fsync failure of {}",
                path.display()
            )));
        }
        Ok(*lock(&self.0.skipped) == kind)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.0.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the power: every later change through this disk fails; once the changes
    /// running have ended, leaves on disk what a power loss would (see [`SimCrash`]).
    /// The disk stays off until [`SimDisk::power_on`].
    pub fn crash(&self, mode: SimCrash, seed: u64) -> io::Result<()> {
        self.0.off.store(true, Ordering::SeqCst);
        while self.0.running.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut rng = seed | 1;
        let mut next = move || {
            // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let ledger = std::mem::take(&mut *self.ledger());
        let (files, dirs) = walk(&self.0.root)?;
        for path in files {
            let state = match ledger.files.get(&path) {
                Some(state) => *state,
                None if ledger.durable.contains(&path) => continue,
                None => NEW_FILE,
            };
            let lose_name = !state.named && (mode == SimCrash::DropUnsynced || next() % 2 == 0);
            if lose_name {
                match ledger.replaced.get(&path) {
                    Some(old) => std::fs::write(&path, old)?,
                    None => remove_file(&path)?,
                }
                continue;
            }
            // a file may vanish meanwhile: Lance's own writer (not gated: it bypasses
            // any object store) removes its temporary files as its task is dropped
            let Some(len) = gone_is_none(std::fs::metadata(&path))?.map(|m| m.len()) else {
                continue;
            };
            if len <= state.synced_len {
                continue;
            }
            let unsynced = len - state.synced_len;
            let keep = match mode {
                SimCrash::DropUnsynced => 0,
                _ => next() % (unsynced + 1),
            };
            let Some(file) = gone_is_none(std::fs::OpenOptions::new().write(true).open(&path))?
            else {
                continue;
            };
            file.set_len(state.synced_len + keep)?;
            if mode == SimCrash::TearLastWrite && keep > 0 {
                use std::os::unix::fs::FileExt;
                let garbled = (next() % keep.min(64)) + 1;
                let junk: Vec<u8> = (0..garbled).map(|_| next() as u8).collect();
                file.write_all_at(&junk, state.synced_len + keep - garbled)?;
            }
        }
        for dir in dirs {
            let new = !ledger.durable.contains(&dir) && !ledger.named_dirs.contains(&dir);
            if new && (mode == SimCrash::DropUnsynced || next() % 2 == 0) {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Turns the power back on: what is on disk now is durable.
    pub fn power_on(&self) {
        let (files, dirs) = walk(&self.0.root).unwrap_or_default();
        *self.ledger() = Ledger {
            durable: files.into_iter().chain(dirs).collect(),
            ..Ledger::default()
        };
        self.0.off.store(false, Ordering::SeqCst);
    }
}

/// `None` for a file that is not there (any more).
fn gone_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn off() -> io::Error {
    io::Error::other("the simulated power is off")
}

impl Ledger {
    /// The state of a file about to change.
    fn file(&mut self, path: &Path) -> &mut FileState {
        let durable = self.durable.contains(path);
        self.files
            .entry(path.to_path_buf())
            .or_insert_with(|| match durable {
                true => FileState {
                    synced_len: u64::MAX,
                    named: true,
                },
                false => NEW_FILE,
            })
    }
}

impl SimDisk {
    /// Records that the bytes of `path` from `offset` on are about to change: none of
    /// them is durable any more, and a power loss keeps at most a prefix of them (the
    /// model of a file written at its end, or into its preallocated tail).
    fn unsynced_from(&self, path: &Path, offset: u64) {
        let mut ledger = self.ledger();
        let state = ledger.file(path);
        if state.synced_len == u64::MAX {
            state.synced_len = std::fs::metadata(path).map_or(0, |m| m.len());
        }
        state.synced_len = state.synced_len.min(offset);
    }
}

impl Disk for SimDisk {
    fn begin(&self) -> io::Result<Op> {
        let op = Op::counted(&self.0.running);
        if self.0.off.load(Ordering::SeqCst) {
            return Err(off());
        }
        Ok(op)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let _op = self.begin()?;
        let is_data = path.extension().is_some_and(|e| e == "lance")
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "data");
        let kind = if is_data {
            Some(SyncKind::DataFiles)
        } else if path.file_name().is_some_and(|n| n == SUMS_FILE) {
            Some(SyncKind::Seals)
        } else {
            None
        };
        if self.fault(path, kind)? {
            return Ok(());
        }
        let len = std::fs::metadata(path)?.len();
        self.ledger().file(path).synced_len = len;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let _op = self.begin()?;
        let manifests = dir.file_name().is_some_and(|d| d == "_versions");
        if self.fault(dir, manifests.then_some(SyncKind::ManifestDir))? {
            return Ok(());
        }
        let mut ledger = self.ledger();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if ledger.durable.contains(&path) {
                continue;
            }
            ledger.replaced.remove(&path);
            if entry.file_type()?.is_dir() {
                ledger.named_dirs.insert(path);
            } else {
                ledger.file(&path).named = true;
            }
        }
        Ok(())
    }

    fn write_from(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _op = self.begin()?;
        self.unsynced_from(path, offset);
        RealDisk.write_from(path, offset, bytes)
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let _op = self.begin()?;
        self.unsynced_from(path, offset);
        RealDisk.write_at(path, offset, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _op = self.begin()?;
        let mut ledger = self.ledger();
        let target = *ledger.file(to);
        if target.named
            && let Ok(old) = std::fs::read(to)
            && target.synced_len >= old.len() as u64
        {
            ledger.replaced.insert(to.to_path_buf(), old);
        }
        let moved = *ledger.file(from);
        RealDisk.rename(from, to)?;
        ledger.files.remove(from);
        ledger.durable.remove(from);
        ledger.durable.remove(to);
        ledger.files.insert(
            to.to_path_buf(),
            FileState {
                named: false,
                ..moved
            },
        );
        Ok(())
    }
}

//! Consumer groups of a bucket on local disk: `groups/{group}.offsets`, a log of
//! change records in a file of [`super::COMPACT_AT`] record slots, preallocated with
//! zeros, changed under an exclusive `flock` of it.
//!
//! Invariants:
//! - a change is decided on the file's last intact record, read under the lock of the
//!   file the group's name points to (a lock taken on a file that was deleted or
//!   replaced meanwhile is let go and taken again on the new one);
//! - the change is written after the last intact record (over a torn one), into the
//!   zeros, and made durable before it returns: an `fdatasync` (the size does not
//!   change); a new file is written whole (the record and its zeros), fsynced, and its
//!   directory entry (and a new `groups/` directory's) fsynced;
//! - a full file is replaced with its last record and fresh zeros: written to
//!   `{file}.tmp`, fsynced, renamed over, directory fsynced;
//! - every write, rename and fsync goes through the bucket's [`Disk`], so a simulated
//!   power loss sees them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{Change, RECORD_BYTES, token};
use super::{COMPACT_AT, GROUPS_DIR};
use crate::error::{Error, Result};
use crate::store::Disk;

/// The suffix of a group's file.
pub(crate) const SUFFIX: &str = ".offsets";

#[derive(Debug, Clone)]
pub(crate) struct Local {
    root: PathBuf,
    dir: PathBuf,
    disk: Arc<dyn Disk>,
    /// Group files kept open between changes (a change locks, checks and writes
    /// through the descriptor); at most [`OPEN_MAX`].
    open: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<File>>>>,
    /// Changes through this handle, one at a time: its tasks share a descriptor, and
    /// a `flock` excludes other descriptors only.
    serial: Arc<std::sync::Mutex<()>>,
}

/// Group files a handle keeps open.
const OPEN_MAX: usize = 64;

/// A change in progress through this handle: the group's file locked (and this
/// handle's other changes held off) with its bytes read. Dropped in field order: the
/// file unlocked, then the handle's serialisation, then the disk operation.
struct Locked<'a> {
    held: Held,
    bytes: Vec<u8>,
    _serial: std::sync::MutexGuard<'a, ()>,
    _op: crate::store::Op,
}

/// A group file locked by this handle; unlocked when dropped.
struct Held {
    file: Arc<File>,
    path: PathBuf,
    /// The file's size when locked.
    len: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A group file's contents: its last intact change and the bytes up to the end of it.
struct Parsed {
    last: Option<Change>,
    valid_len: u64,
}

/// Parses a group file: its records in order, each intact and of a later generation
/// than the one before, up to the first all-zero record (the preallocated tail). A
/// last record that is cut short or fails its checksum (only zeros after it) is an
/// interrupted change (never acknowledged) and is left out; damage anywhere else is
/// [`Error::GroupDamaged`].
fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut last: Option<Change> = None;
    let mut at = 0usize;
    while at + RECORD_BYTES <= bytes.len() {
        let slot = &bytes[at..at + RECORD_BYTES];
        if slot.iter().all(|b| *b == 0) {
            break;
        }
        match Change::decode(slot) {
            Ok(c) => {
                if let Some(prev) = last
                    && c.generation <= prev.generation
                {
                    return Err(damaged(
                        path,
                        format!(
                            "the record at byte {at} has generation {}, not after {}",
                            c.generation, prev.generation
                        ),
                    ));
                }
                last = Some(c);
                at += RECORD_BYTES;
            }
            Err(_) if bytes[at + RECORD_BYTES..].iter().all(|b| *b == 0) => break,
            Err(reason) => {
                return Err(damaged(
                    path,
                    format!("the record at byte {at} of {}: {reason}", bytes.len()),
                ));
            }
        }
    }
    Ok(Parsed {
        last,
        valid_len: at as u64,
    })
}

/// `record` followed by zeros, `len` bytes in all.
fn preallocated(record: &[u8], len: u64) -> Vec<u8> {
    let mut all = record.to_vec();
    all.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
    all
}

fn damaged(path: &Path, reason: String) -> Error {
    Error::GroupDamaged {
        path: path.display().to_string(),
        reason,
    }
}

impl Local {
    pub(crate) fn new(root: &Path, disk: Arc<dyn Disk>) -> Self {
        Self {
            root: root.to_path_buf(),
            dir: root.join(GROUPS_DIR),
            disk,
            open: Arc::default(),
            serial: Arc::default(),
        }
    }

    pub(crate) fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}{SUFFIX}"))
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        Error::io(op, path)
    }

    /// The group's last change, read without the lock (a change being written is
    /// an interrupted one to this read).
    pub(crate) fn read(&self, group: &str) -> Result<Option<Change>> {
        let path = self.path(group);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(parse(&bytes, &path)?.last),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io("read consumer group", &path)(e)),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<File>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The group's file, opened (created if absent, kept open) and locked; it is the
    /// one the group's name points to while the lock is held.
    fn lock(&self, group: &str) -> Result<Held> {
        let path = self.path(group);
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir)
                .map_err(Self::io("create the consumer groups directory", &self.dir))?;
            self.disk
                .sync_dir(&self.root)
                .map_err(Self::io("fsync", &self.root))?;
        }
        loop {
            let kept = self.cached().get(group).cloned();
            let file = match kept {
                Some(file) => file,
                None => {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(Self::io("open consumer group", &path))?;
                    let file = Arc::new(file);
                    let mut open = self.cached();
                    if open.len() >= OPEN_MAX {
                        open.clear();
                    }
                    open.insert(group.to_owned(), Arc::clone(&file));
                    file
                }
            };
            file.lock()
                .map_err(Self::io("lock consumer group", &path))?;
            let mut held = Held {
                file,
                path: path.clone(),
                len: 0,
            };
            let locked = held
                .file
                .metadata()
                .map_err(Self::io("stat consumer group", &path))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                    held.len = locked.len();
                    return Ok(held);
                }
                // deleted or replaced (by this or another handle) since it was opened,
                // or while this waited for the lock: open the new one
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io("stat consumer group", &path)(e)),
            }
            self.forget(group);
        }
    }

    /// Starts a change of `group`: the disk operation, this handle's turn, the file's
    /// lock, its bytes.
    fn lock_and_read(&self, group: &str) -> Result<Locked<'_>> {
        let op = self.disk.begin().map_err(Self::io("change", &self.dir))?;
        let serial = self
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = self.lock(group)?;
        let bytes = Self::contents(&held)?;
        Ok(Locked {
            held,
            bytes,
            _serial: serial,
            _op: op,
        })
    }

    /// Closes the group's kept file (it was deleted or replaced).
    fn forget(&self, group: &str) {
        self.cached().remove(group);
    }

    /// The locked file's bytes.
    fn contents(held: &Held) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; usize::try_from(held.len).unwrap_or(usize::MAX).min(1 << 20)];
        let mut at = 0;
        while at < bytes.len() {
            match held.file.read_at(&mut bytes[at..], at as u64) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Self::io("read consumer group", &held.path)(e)),
            }
        }
        bytes.truncate(at);
        Ok(bytes)
    }

    /// Applies one change: `decide` gets the group's last change and returns the new
    /// offset (or refuses, and nothing is written). Returns the change, durable.
    pub(crate) fn change(
        &self,
        group: &str,
        decide: impl FnOnce(Option<&Change>) -> Result<u64>,
    ) -> Result<Change> {
        let locked = self.lock_and_read(group)?;
        let (held, bytes) = (&locked.held, &locked.bytes);
        let path = held.path.clone();
        let parsed = parse(bytes, &path)?;
        let offset = decide(parsed.last.as_ref())?;
        let change = Change {
            generation: parsed.last.map_or(1, |c| c.generation + 1),
            offset,
            token: token(),
        };
        let record = change.encode();
        let capacity = (COMPACT_AT * RECORD_BYTES) as u64;
        if parsed.valid_len + RECORD_BYTES as u64 > capacity {
            // full: the file replaced with the new record alone, and room after it
            let tmp = self.dir.join(format!("{group}{SUFFIX}.tmp"));
            self.disk
                .write_from(&tmp, 0, &preallocated(&record, capacity))
                .map_err(Self::io("write consumer group", &tmp))?;
            self.disk
                .sync_file(&tmp)
                .map_err(Self::io("fsync consumer group", &tmp))?;
            self.disk
                .rename(&tmp, &path)
                .map_err(Self::io("replace consumer group", &path))?;
            self.forget(group);
            self.disk
                .sync_dir(&self.dir)
                .map_err(Self::io("fsync", &self.dir))?;
        } else if (bytes.len() as u64) < capacity {
            // a new file (or one a crash cut short): the record and the room after
            // it, size and name made durable
            let tail = preallocated(&record, capacity - parsed.valid_len);
            self.disk
                .write_from(&path, parsed.valid_len, &tail)
                .map_err(Self::io("write consumer group", &path))?;
            self.disk
                .sync_file(&path)
                .map_err(Self::io("fsync consumer group", &path))?;
            self.disk
                .sync_dir(&self.dir)
                .map_err(Self::io("fsync", &self.dir))?;
        } else {
            // into the preallocated room: the size does not change, so an fdatasync
            // makes it durable (no metadata journal commit)
            self.disk
                .write_at_file(&held.file, &path, parsed.valid_len, &record)
                .map_err(Self::io("write consumer group", &path))?;
            self.disk
                .sync_data_file(&held.file, &path)
                .map_err(Self::io("fsync consumer group", &path))?;
        }
        drop(locked);
        Ok(change)
    }

    /// Deletes the group's file; whether the group had a committed offset.
    pub(crate) fn delete(&self, group: &str) -> Result<bool> {
        if !self.path(group).exists() {
            return Ok(false);
        }
        let locked = self.lock_and_read(group)?;
        let path = locked.held.path.clone();
        // a damaged file is deleted too: deleting is how a user gets rid of it
        let had = parse(&locked.bytes, &path).map_or(true, |p| p.last.is_some());
        std::fs::remove_file(&path).map_err(Self::io("delete consumer group", &path))?;
        self.forget(group);
        self.disk
            .sync_dir(&self.dir)
            .map_err(Self::io("fsync", &self.dir))?;
        drop(locked);
        Ok(had)
    }

    /// Every group with a committed offset.
    pub(crate) fn list(&self) -> Result<Vec<(String, Change)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("list consumer groups", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io("list consumer groups", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(group) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            if let Some(change) = self.read(group)? {
                out.push((group.to_owned(), change));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(generation: u64, offset: u64) -> Change {
        Change {
            generation,
            offset,
            token: 7,
        }
    }

    #[test]
    fn a_torn_last_record_is_an_interrupted_change() {
        let path = Path::new("g.offsets");
        let mut bytes = [change(1, 10).encode(), change(2, 20).encode()].concat();
        assert_eq!(parse(&bytes, path).unwrap().last, Some(change(2, 20)));
        // cut short
        let cut = &bytes[..bytes.len() - 3];
        let p = parse(cut, path).unwrap();
        assert_eq!((p.last, p.valid_len), (Some(change(1, 10)), 40));
        // garbled
        bytes[70] ^= 0xff;
        let p = parse(&bytes, path).unwrap();
        assert_eq!((p.last, p.valid_len), (Some(change(1, 10)), 40));
    }

    #[test]
    fn damage_before_the_last_record_names_the_file() {
        let path = Path::new("/b/groups/g.offsets");
        let mut bytes = [
            change(1, 10).encode(),
            change(2, 20).encode(),
            change(3, 30).encode(),
        ]
        .concat();
        bytes[45] ^= 1;
        let e = parse(&bytes, path).err().unwrap().to_string();
        assert!(e.contains("/b/groups/g.offsets"), "{e}");
        assert!(e.contains("byte 40"), "{e}");
        let stale = [change(2, 10).encode(), change(2, 20).encode()].concat();
        let e = parse(&stale, path).err().unwrap().to_string();
        assert!(e.contains("generation 2, not after 2"), "{e}");
    }
}

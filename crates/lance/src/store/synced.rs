//! [`SyncedFiles`]: which files of a local dataset are known durable, and the fsync of
//! the rest. Lance writes files without fsync; [`SyncedFiles::sync_new`] walks the
//! dataset and fsyncs every file not known durable (written by Lance since the last
//! call, or by an earlier process before a crash), then the directories holding new
//! names. The object store calls it before each manifest (`object`); a flush takes
//! the files it made durable ([`SyncedFiles::take_fresh`]) to seal them.
//!
//! Invariant: when [`SyncedFiles::sync_new`] returns `Ok`, every file that existed in
//! the dataset when it was called, and the directory entries naming them, are durable.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Disk;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Known {
    /// Files and directories known durable.
    synced: HashSet<PathBuf>,
    /// Files fsynced and not yet taken by `take_fresh`.
    fresh: Vec<PathBuf>,
}

/// Tracks which files of a local dataset are known durable (shared by the dataset's
/// object store and the flushes).
#[derive(Debug)]
pub(crate) struct SyncedFiles {
    root: PathBuf,
    disk: Arc<dyn Disk>,
    known: Mutex<Known>,
}

impl SyncedFiles {
    pub(crate) fn new(root: PathBuf, disk: Arc<dyn Disk>) -> Self {
        Self {
            root,
            disk,
            known: Mutex::new(Known::default()),
        }
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The files made durable since the last call.
    pub(crate) fn take_fresh(&self) -> Vec<PathBuf> {
        std::mem::take(&mut self.known().fresh)
    }

    /// Records `paths` (files and directories the caller has just fsynced) as known
    /// durable, so the next [`Self::sync_new`] does not fsync them again. They are not
    /// fresh: only files a walk found are taken to be sealed.
    pub(crate) fn mark_synced(&self, paths: impl IntoIterator<Item = PathBuf>) {
        self.known().synced.extend(paths);
    }

    /// Forgets every file: the next [`Self::sync_new`] fsyncs them all again.
    pub(crate) fn forget(&self) {
        *self.known() = Known::default();
    }

    /// fsyncs every file not known durable, then the directories holding new names
    /// and the dataset's own entry in its parent.
    pub(crate) fn sync_new(&self) -> Result<()> {
        if !self.root.exists() {
            return Ok(());
        }
        let mut dirs = vec![self.root.clone()];
        let mut dirty_dirs: Vec<PathBuf> = Vec::new();
        let mut present = HashSet::new();
        let mut walked = Vec::new();
        let synced = self.known().synced.clone();
        let mut newly = Vec::new();
        // a name can go between the listing and its fsync (another process's
        // temporary file, renamed or removed): what is gone needs no fsync
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        while let Some(dir) = dirs.pop() {
            let mut new_here = false;
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if gone(&e) && dir != self.root => continue,
                Err(e) => return Err(Error::io("list", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(Error::io("list", &dir))?;
                let path = entry.path();
                let kind = match entry.file_type() {
                    Ok(kind) => kind,
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(Error::io("stat", &path)(e)),
                };
                if kind.is_dir() {
                    if !synced.contains(&path) {
                        new_here = true;
                        newly.push(path.clone());
                    }
                    dirs.push(path);
                } else {
                    if !synced.contains(&path) {
                        match self.disk.sync_file(&path) {
                            Ok(()) => {}
                            Err(e) if gone(&e) => continue,
                            Err(e) => return Err(Error::io("fsync", &path)(e)),
                        }
                        new_here = true;
                        walked.push(path.clone());
                    }
                    present.insert(path);
                }
            }
            if new_here {
                dirty_dirs.push(dir);
            }
        }
        for dir in &dirty_dirs {
            match self.disk.sync_dir(dir) {
                Ok(()) => {}
                Err(e) if gone(&e) && *dir != self.root => {}
                Err(e) => return Err(Error::io("fsync directory", dir)(e)),
            }
        }
        if dirty_dirs.contains(&self.root)
            && let Some(parent) = self.root.parent()
        {
            self.sync_dir(parent)?;
        }
        let mut known = self.known();
        known.synced.extend(newly);
        known.synced.extend(walked.iter().cloned());
        // forget files removed since (cleanup), so the set does not grow forever
        known.synced.retain(|p| present.contains(p) || p.is_dir());
        known.fresh.extend(walked);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.disk
            .sync_dir(dir)
            .map_err(Error::io("fsync directory", dir))
    }
}

//! Making Lance commits durable. Lance's local object store writes files without
//! fsync, so a commit survives a process crash but not a power loss. After every
//! commit this module fsyncs each file of the dataset it has not fsynced before (data
//! files, deletion files, transaction files, manifests) and then their directories.
//!
//! Invariant: when [`Durability::sync_new`] returns `Ok`, every file that existed in
//! the dataset when it was called, and the directory entries naming them, are durable.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, Result, sync_dir};

/// Tracks which files of a local dataset are known durable.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    root: PathBuf,
    synced: HashSet<PathBuf>,
}

impl Durability {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            synced: HashSet::new(),
        }
    }

    /// fsyncs every file not fsynced before, then the directories holding them and the
    /// dataset's own entry in its parent. Returns the files it fsynced.
    pub(crate) fn sync_new(&mut self) -> Result<Vec<PathBuf>> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let mut dirs = vec![self.root.clone()];
        let mut dirty_dirs: Vec<PathBuf> = Vec::new();
        let mut present = HashSet::new();
        let mut fresh = Vec::new();
        while let Some(dir) = dirs.pop() {
            let mut new_here = false;
            for entry in std::fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
                let entry = entry.map_err(Error::io("list", &dir))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(Error::io("stat", &path))?;
                if kind.is_dir() {
                    if !self.synced.contains(&path) {
                        new_here = true;
                        self.synced.insert(path.clone());
                    }
                    dirs.push(path);
                } else {
                    if !self.synced.contains(&path) {
                        File::open(&path)
                            .and_then(|f| f.sync_all())
                            .map_err(Error::io("fsync", &path))?;
                        self.synced.insert(path.clone());
                        new_here = true;
                        fresh.push(path.clone());
                    }
                    present.insert(path);
                }
            }
            if new_here {
                dirty_dirs.push(dir);
            }
        }
        for dir in &dirty_dirs {
            sync_dir(dir)?;
        }
        if dirty_dirs.contains(&self.root)
            && let Some(parent) = self.root.parent()
        {
            sync_dir(parent)?;
        }
        // forget files removed since (cleanup), so the set does not grow forever
        self.synced.retain(|p| present.contains(p) || p.is_dir());
        Ok(fresh)
    }
}

//! A simulated file system for crash tests: it keeps what was written apart from what
//! was made durable, and on [`SimFs::crash`] keeps only what a real power loss could
//! leave behind.
//!
//! Model (RocksDB's fault-injection file system, redb's crash backend):
//! - file content is durable up to the last `sync_data`; later writes are volatile;
//! - directory entries (create, rename, remove) are durable only after `sync_dir`;
//!   a crash forgets newer ones, so a removed file can come back and a created one
//!   can vanish;
//! - a crash keeps, per file, one of: nothing volatile, a random prefix of the
//!   volatile bytes, or everything but the last write, which is torn at a 512-byte
//!   boundary (and optionally zero-filled to its full length);
//! - faults can be injected: an EIO on the next fsync, ENOSPC after some bytes.
//!
//! Handles opened before a crash fail afterwards, like the file descriptors of a
//! process that no longer exists. Directories are durable as soon as created.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{Fs, FsFile};

/// How a simulated crash treats bytes and names that were not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every volatile byte is lost.
    DropUnsynced,
    /// A random prefix of each file's volatile bytes survives.
    KeepPrefix,
    /// Volatile writes survive but the last one, which is cut at a random 512-byte
    /// boundary; the lost part may read back as zeros.
    TearLastWrite,
    /// One of the above, chosen per file.
    Random,
}

const SECTOR_BYTES: usize = 512;

#[derive(Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Lowest offset changed since the last sync.
    dirty_from: usize,
    /// Offset and length of the last write, if any since the last sync.
    last_write: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
struct Dir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    next_ino: u64,
    files: HashMap<u64, SimFile>,
    dirs: HashMap<PathBuf, Dir>,
    fail_next_sync: bool,
    write_budget_bytes: Option<u64>,
    syncs: u64,
}

/// The simulated file system. Cheap to clone: clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimHandle {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    path: PathBuf,
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok((dir, name.to_owned()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

/// A small deterministic generator (SplitMix64) so crashes replay from a seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

impl SimFs {
    /// An empty simulated file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `sync_data` or `sync_dir` fails with EIO (once).
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Writes fail with ENOSPC once `bytes` more bytes have been written; the write
    /// that crosses the limit writes the part that fits. Writes of zeros only (the
    /// undoing of a failed write) are not counted. `None` lifts the limit.
    pub fn set_write_budget(&self, bytes: Option<u64>) {
        self.lock().write_budget_bytes = bytes;
    }

    /// Number of successful `sync_data` and `sync_dir` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// The current (volatile) content of a file, if its name exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let (dir, name) = split(path).ok()?;
        let ino = st.dirs.get(&dir)?.live.get(&name)?;
        st.files.get(ino).map(|f| f.data.clone())
    }

    /// Replaces the content of an existing file, durably (for corruption tests).
    pub fn write_file(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let (dir, name) = split(path)?;
        let ino = *st
            .dirs
            .get(&dir)
            .and_then(|d| d.live.get(&name))
            .ok_or_else(|| not_found(path))?;
        let file = st.files.entry(ino).or_default();
        file.data = content.to_vec();
        file.durable = content.to_vec();
        file.dirty_from = content.len();
        file.last_write = None;
        Ok(())
    }

    /// Simulates a power loss: keeps only what `mode` lets survive, and makes every
    /// handle opened before it fail. Deterministic for a given `seed`.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        let mut rng = SimRng::new(seed);
        let mut st = self.lock();
        st.generation += 1;
        st.fail_next_sync = false;
        st.write_budget_bytes = None;
        for dir in st.dirs.values_mut() {
            dir.live = dir.durable.clone();
        }
        let referenced: std::collections::HashSet<u64> = st
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        st.files.retain(|ino, _| referenced.contains(ino));
        let mut inos: Vec<u64> = st.files.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(file) = st.files.get_mut(&ino) else {
                continue;
            };
            let mode = match mode {
                CrashMode::Random => match rng.below(3) {
                    0 => CrashMode::DropUnsynced,
                    1 => CrashMode::KeepPrefix,
                    _ => CrashMode::TearLastWrite,
                },
                other => other,
            };
            let base = file.dirty_from.min(file.data.len());
            let content = match mode {
                CrashMode::DropUnsynced => file.durable.clone(),
                CrashMode::KeepPrefix => {
                    let keep = rng.below((file.data.len() - base) as u64 + 1) as usize;
                    file.data[..base + keep].to_vec()
                }
                _ => match file.last_write {
                    Some((start, len)) if start >= base && start + len <= file.data.len() => {
                        let sectors = (start + len) / SECTOR_BYTES - start / SECTOR_BYTES;
                        let cut = (start / SECTOR_BYTES + rng.below(sectors as u64 + 1) as usize)
                            * SECTOR_BYTES;
                        let cut = cut.clamp(start, start + len);
                        let mut c = file.data[..cut].to_vec();
                        if rng.below(2) == 0 {
                            c.resize(start + len, 0);
                        }
                        c
                    }
                    _ => file.durable.clone(),
                },
            };
            file.data = content.clone();
            file.durable = content;
            file.dirty_from = file.data.len();
            file.last_write = None;
        }
    }
}

impl SimHandle {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.generation != self.generation {
            return Err(io::Error::other(format!(
                "{} was opened before a simulated crash",
                self.path.display()
            )));
        }
        f(&mut st)
    }
}

impl FsFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        let ino = self.ino;
        self.with(|st| Ok(st.files.get(&ino).map_or(0, |f| f.data.len() as u64)))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let ino = self.ino;
        self.with(|st| {
            let data = st.files.get(&ino).map_or(&[][..], |f| &f.data[..]);
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let ino = self.ino;
        self.with(|st| {
            // zero-filling (undoing a failed write) needs no new space
            let zeros = buf.iter().all(|b| *b == 0);
            let (n, full) = match st.write_budget_bytes {
                Some(budget) if !zeros && (buf.len() as u64) > budget => (budget as usize, false),
                _ => (buf.len(), true),
            };
            if let Some(budget) = st.write_budget_bytes.as_mut().filter(|_| !zeros) {
                *budget -= n as u64;
            }
            let file = st.files.entry(ino).or_default();
            let start = offset as usize;
            if file.data.len() < start + n {
                file.dirty_from = file.dirty_from.min(file.data.len());
                file.data.resize(start + n, 0);
            }
            file.data[start..start + n].copy_from_slice(&buf[..n]);
            file.dirty_from = file.dirty_from.min(start);
            file.last_write = Some((start, n));
            if full {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (simulated)",
                ))
            }
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        let ino = self.ino;
        self.with(|st| {
            if std::mem::take(&mut st.fail_next_sync) {
                return Err(io::Error::other("fsync failed (simulated EIO)"));
            }
            st.syncs += 1;
            let file = st.files.entry(ino).or_default();
            let from = file.dirty_from.min(file.durable.len()).min(file.data.len());
            file.durable.truncate(from);
            file.durable.extend_from_slice(&file.data[from..]);
            file.dirty_from = file.data.len();
            file.last_write = None;
            Ok(())
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let ino = self.ino;
        self.with(|st| {
            let file = st.files.entry(ino).or_default();
            file.dirty_from = file.dirty_from.min(file.data.len()).min(len as usize);
            file.data.resize(len as usize, 0);
            file.last_write = None;
            Ok(())
        })
    }
}

impl SimFs {
    fn handle(&self, st: &State, ino: u64, path: &Path) -> Arc<dyn FsFile> {
        Arc::new(SimHandle {
            state: self.state.clone(),
            ino,
            generation: st.generation,
            path: path.to_path_buf(),
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let mut p = Some(dir);
        while let Some(d) = p {
            st.dirs.entry(d.to_path_buf()).or_default();
            p = d.parent();
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        let d = st.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(d.live.keys().cloned().collect())
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let (dir, name) = split(path)?;
        let mut st = self.lock();
        if !st.dirs.contains_key(&dir) {
            return Err(not_found(&dir));
        }
        st.next_ino += 1;
        let ino = st.next_ino;
        st.files.insert(ino, SimFile::default());
        if let Some(d) = st.dirs.get_mut(&dir) {
            d.live.insert(name, ino);
        }
        Ok(self.handle(&st, ino, path))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let (dir, name) = split(path)?;
        let st = self.lock();
        let ino = *st
            .dirs
            .get(&dir)
            .and_then(|d| d.live.get(&name))
            .ok_or_else(|| not_found(path))?;
        Ok(self.handle(&st, ino, path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let mut st = self.lock();
        let ino = st
            .dirs
            .get_mut(&from_dir)
            .and_then(|d| d.live.remove(&from_name))
            .ok_or_else(|| not_found(from))?;
        st.dirs
            .get_mut(&to_dir)
            .ok_or_else(|| not_found(&to_dir))?
            .live
            .insert(to_name, ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut st = self.lock();
        st.dirs
            .get_mut(&dir)
            .and_then(|d| d.live.remove(&name))
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if std::mem::take(&mut st.fail_next_sync) {
            return Err(io::Error::other("directory fsync failed (simulated EIO)"));
        }
        st.syncs += 1;
        let d = st.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        d.durable = d.live.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimFs, PathBuf, Arc<dyn FsFile>) {
        let fs = SimFs::new();
        let dir = PathBuf::from("/w");
        fs.create_dir_all(&dir).unwrap();
        let f = fs.create(&dir.join("a")).unwrap();
        (fs, dir, f)
    }

    #[test]
    fn unsynced_bytes_and_names_are_lost() {
        let (fs, dir, f) = setup();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.crash(CrashMode::DropUnsynced, 1);
        // the name was never made durable by sync_dir
        assert!(fs.list(&dir).unwrap().is_empty());

        let f = fs.create(&dir.join("b")).unwrap();
        fs.sync_dir(&dir).unwrap();
        f.write_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(b" volatile", 7).unwrap();
        fs.crash(CrashMode::DropUnsynced, 2);
        assert_eq!(fs.read_file(&dir.join("b")).unwrap(), b"durable");
        // old handles are dead
        assert!(f.write_at(b"x", 0).is_err());
    }

    #[test]
    fn removed_names_come_back_unless_synced() {
        let (fs, dir, f) = setup();
        f.write_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.remove(&dir.join("a")).unwrap();
        fs.crash(CrashMode::DropUnsynced, 3);
        assert_eq!(fs.read_file(&dir.join("a")).unwrap(), b"x");
    }

    #[test]
    fn torn_write_keeps_a_sector_aligned_prefix() {
        for seed in 0..50 {
            let (fs, dir, f) = setup();
            fs.sync_dir(&dir).unwrap();
            f.write_at(&[1u8; 100], 0).unwrap();
            f.sync_data().unwrap();
            f.write_at(&[2u8; 2000], 100).unwrap();
            fs.crash(CrashMode::TearLastWrite, seed);
            let data = fs.read_file(&dir.join("a")).unwrap();
            assert_eq!(&data[..100], &[1u8; 100]);
            let twos = data[100..].iter().take_while(|b| **b == 2).count();
            assert!(
                (100 + twos) % 512 == 0 || twos == 0 || twos == 2000,
                "seed {seed}"
            );
            assert!(data[100 + twos..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn injected_faults() {
        let (fs, _dir, f) = setup();
        fs.fail_next_sync();
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok());
        fs.set_write_budget(Some(3));
        let err = f.write_at(b"hello", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 3);
    }
}

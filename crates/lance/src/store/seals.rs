//! Whole-file checksums of the dataset's data files, kept beside the dataset in
//! `{storage_path}/data.lance.sums`.
//!
//! Lance's data files carry no checksums, and Lance's decoders trust the sizes and
//! offsets stored in them: a damaged file can make a read panic or, worse, ask the
//! allocator for terabytes, which aborts the process (no `catch_unwind` can stop it).
//! So every data file a flush, a compaction or a column rewrite writes is sealed: its
//! size and CRC-32 are appended here and fsynced before the flush is reported durable.
//! Before Lance reads a fragment, each sealed file of the fragment is checked once per
//! handle (read back whole and compared); a mismatch is an error naming the file, and
//! Lance never sees the damaged bytes.
//!
//! Invariants:
//! - an entry is appended only after its file was fsynced, and the seals file is fsynced
//!   before the flush that wrote the file returns;
//! - a file without an entry (written by another tool, or by a flush cut by a crash
//!   between its commit and its seal) is read unverified: its rows are still checked
//!   against their row checksums, but a damage that derails Lance's decoder is not
//!   caught before it; `LanceBucket::verify_files` reports how many files are unsealed;
//! - a torn or damaged entry ends the list (the entries after it are ignored, their
//!   files read unverified); it never makes the bucket unopenable. Loading never
//!   writes (readers in other processes load the file while the writer appends); the
//!   writer's next seal cuts the file back to its valid prefix before appending.
//!
//! Format (little-endian): the magic `PSUMS001`, then entries
//! `name_len u16 | name | size u64 | crc u32 | entry_crc u32`, `entry_crc` being the
//! CRC-32 of the entry's preceding bytes. See `docs/lance-layout.md`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::Disk;
use crate::error::{Error, Result};

/// Name of the seals file inside a bucket's storage path.
pub const SUMS_FILE: &str = "data.lance.sums";
const MAGIC: &[u8; 8] = b"PSUMS001";

/// Size and CRC-32 of one data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    pub size: u64,
    pub crc: u32,
}

/// Reads `path` whole and returns its seal.
pub(crate) fn seal_of(path: &Path) -> Result<Seal> {
    let mut file = File::open(path).map_err(Error::io("open", path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Seal {
        size,
        crc: hasher.finalize(),
    })
}

fn encode_entry(name: &str, seal: Seal, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&seal.size.to_le_bytes());
    out.extend_from_slice(&seal.crc.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Parses the entries of a seals file, stopping at the first torn or damaged one.
/// Returns them and the length of the valid prefix (0 without a valid magic).
fn decode(bytes: &[u8]) -> (HashMap<String, Seal>, usize) {
    let mut out = HashMap::new();
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return (out, 0);
    };
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let total = 2 + len + 8 + 4 + 4;
        if rest.len() < total {
            break;
        }
        let body = &rest[..total - 4];
        let stored = u32::from_le_bytes(rest[total - 4..total].try_into().unwrap_or_default());
        if crc32fast::hash(body) != stored {
            break;
        }
        let Ok(name) = std::str::from_utf8(&body[2..2 + len]) else {
            break;
        };
        let size = u64::from_le_bytes(body[2 + len..10 + len].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(body[10 + len..14 + len].try_into().unwrap_or_default());
        out.insert(name.to_owned(), Seal { size, crc });
        rest = &rest[total..];
    }
    (out, bytes.len() - rest.len())
}

/// The entries of the seals file at `path` (none when it is absent) and the length of
/// its valid prefix. Read only: a reader process reads this file too, while the writer
/// may be appending to it; a torn tail is cut by the writer's next seal.
fn read_entries(path: &Path) -> Result<(HashMap<String, Seal>, usize)> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(decode(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((HashMap::new(), 0)),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// The names of the data files sealed in the seals file of the bucket at
/// `storage_path` (read only; none without a seals file).
pub fn sealed_files(storage_path: &Path) -> Result<Vec<String>> {
    let (known, _) = read_entries(&storage_path.join(SUMS_FILE))?;
    let mut names: Vec<String> = known.into_keys().collect();
    names.sort();
    Ok(names)
}

/// The seals of one dataset's data files, and which of them this handle has checked.
#[derive(Debug)]
pub(crate) struct Seals {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    data_dir: PathBuf,
    /// Length of the file's valid prefix: where the next entries go.
    valid_len: Mutex<u64>,
    known: RwLock<HashMap<String, Seal>>,
    verified: Mutex<HashSet<String>>,
}

impl Seals {
    /// Loads `{root}/data.lance.sums` (absent: no seals) for the dataset at `dataset`.
    pub(crate) fn load(root: &Path, dataset: &Path, disk: Arc<dyn Disk>) -> Result<Self> {
        let path = root.join(SUMS_FILE);
        let (known, valid) = read_entries(&path)?;
        Ok(Self {
            disk,
            path,
            data_dir: dataset.join("data"),
            valid_len: Mutex::new(valid as u64),
            known: RwLock::new(known),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Reads the file again (the seals another handle, the writer, added since), and
    /// keeps what this handle has checked: a file's seal never changes.
    pub(crate) fn reload(&self) -> Result<()> {
        let (known, valid) = read_entries(&self.path)?;
        *self
            .valid_len
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = valid as u64;
        if let Ok(mut k) = self.known.write() {
            *k = known;
        }
        Ok(())
    }

    /// The names among `names` that are sealed and not checked yet by this handle.
    pub(crate) fn unchecked(&self, mut names: Vec<String>) -> Vec<String> {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        names.retain(|n| !verified.contains(n) && self.is_sealed(n));
        names
    }

    /// Number of sealed files.
    pub(crate) fn sealed(&self) -> usize {
        self.known.read().map_or(0, |k| k.len())
    }

    /// Whether `name` (a file of `data/`) is sealed.
    pub(crate) fn is_sealed(&self, name: &str) -> bool {
        self.known.read().is_ok_and(|k| k.contains_key(name))
    }

    /// Seals the data files among `paths` (files this handle just fsynced) that are not
    /// sealed yet, and fsyncs the seals file. Returns how many were sealed.
    pub(crate) fn seal_new(&self, paths: &[PathBuf]) -> Result<usize> {
        let mut entries = Vec::new();
        let mut sealed = Vec::new();
        for p in paths {
            if p.parent() != Some(self.data_dir.as_path()) {
                continue;
            }
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".lance") || self.is_sealed(name) {
                continue;
            }
            let seal = seal_of(p)?;
            encode_entry(name, seal, &mut entries);
            sealed.push((name.to_owned(), seal));
        }
        if sealed.is_empty() {
            return Ok(0);
        }
        let fresh = !self.path.exists();
        let mut valid = self
            .valid_len
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut bytes = Vec::with_capacity(MAGIC.len() + entries.len());
        if *valid == 0 {
            bytes.extend_from_slice(MAGIC);
        }
        bytes.extend_from_slice(&entries);
        // after the valid prefix: a torn entry a crash left (or a damaged tail) is
        // cut first, so the entries written now are read back
        self.disk
            .write_from(&self.path, *valid, &bytes)
            .map_err(Error::io("write", &self.path))?;
        self.disk
            .sync_file(&self.path)
            .map_err(Error::io("fsync", &self.path))?;
        *valid += bytes.len() as u64;
        drop(valid);
        if fresh && let Some(dir) = self.path.parent() {
            self.disk
                .sync_dir(dir)
                .map_err(Error::io("fsync directory", dir))?;
        }
        let n = sealed.len();
        if let Ok(mut known) = self.known.write() {
            known.extend(sealed);
        }
        Ok(n)
    }

    /// Rewrites the seals file with the entries of files still present (after a cleanup
    /// removed old ones): written aside, fsynced, renamed over, directory fsynced.
    pub(crate) fn prune(&self) -> Result<()> {
        let kept: Vec<(String, Seal)> = match self.known.read() {
            Ok(k) => k
                .iter()
                .filter(|(name, _)| self.data_dir.join(name).exists())
                .map(|(n, s)| (n.clone(), *s))
                .collect(),
            Err(_) => return Ok(()),
        };
        if kept.len() == self.sealed() {
            return Ok(());
        }
        let mut bytes = MAGIC.to_vec();
        for (name, seal) in &kept {
            encode_entry(name, *seal, &mut bytes);
        }
        let tmp = self.path.with_extension("sums.tmp");
        self.disk
            .write_from(&tmp, 0, &bytes)
            .map_err(Error::io("write", &tmp))?;
        self.disk
            .sync_file(&tmp)
            .map_err(Error::io("fsync", &tmp))?;
        self.disk
            .rename(&tmp, &self.path)
            .map_err(Error::io("rename", &tmp))?;
        if let Some(dir) = self.path.parent() {
            self.disk
                .sync_dir(dir)
                .map_err(Error::io("fsync directory", dir))?;
        }
        *self
            .valid_len
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bytes.len() as u64;
        if let Ok(mut known) = self.known.write() {
            *known = kept.into_iter().collect();
        }
        Ok(())
    }

    /// Checks the sealed files among `names` (data file names) that this handle has
    /// not checked yet. `offset` is the first record offset of the read asking, for
    /// the error.
    pub(crate) fn verify<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        offset: u64,
    ) -> Result<()> {
        for name in names {
            if self.verified.lock().is_ok_and(|v| v.contains(name)) {
                continue;
            }
            let Some(expected) = self.known.read().ok().and_then(|k| k.get(name).copied()) else {
                continue;
            };
            let file = self.data_dir.join(name);
            let found = seal_of(&file)?;
            if found != expected {
                return Err(Error::DataFileDamaged {
                    file,
                    offset,
                    expected_size: expected.size,
                    found_size: found.size,
                    expected_crc: expected.crc,
                    found_crc: found.crc,
                });
            }
            if let Ok(mut v) = self.verified.lock() {
                v.insert(name.to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_ends_the_list() {
        let mut bytes = MAGIC.to_vec();
        encode_entry("a.lance", Seal { size: 10, crc: 7 }, &mut bytes);
        encode_entry("b.lance", Seal { size: 20, crc: 9 }, &mut bytes);
        let (full, valid) = decode(&bytes);
        assert_eq!((full.len(), valid), (2, bytes.len()));
        assert_eq!(full["b.lance"], Seal { size: 20, crc: 9 });
        for cut in MAGIC.len()..bytes.len() {
            let (got, valid) = decode(&bytes[..cut]);
            assert!(got.len() < 2 && valid <= cut, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 6;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped).0.len(), 1);
        assert!(decode(b"garbage").0.is_empty());
    }

    /// A bucket directory whose dataset holds the data files `a.lance` and `b.lance`:
    /// (the directory, the dataset, a, b).
    fn two_data_files() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("data.lance");
        std::fs::create_dir_all(ds.join("data")).unwrap();
        let (a, b) = (ds.join("data/a.lance"), ds.join("data/b.lance"));
        std::fs::write(&a, b"aaaa").unwrap();
        std::fs::write(&b, b"bbbb").unwrap();
        (dir, ds, a, b)
    }

    #[test]
    fn a_reload_sees_later_seals_and_keeps_what_was_checked() {
        let (dir, ds, a, b) = two_data_files();
        let writer = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        writer.seal_new(std::slice::from_ref(&a)).unwrap();
        let reader = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        let both = || vec!["a.lance".to_owned(), "b.lance".to_owned()];
        assert_eq!(reader.unchecked(both()), ["a.lance"]);
        reader.verify(["a.lance"], 0).unwrap();
        assert!(reader.unchecked(both()).is_empty());
        writer.seal_new(std::slice::from_ref(&b)).unwrap();
        reader.reload().unwrap();
        assert_eq!(reader.unchecked(both()), ["b.lance"]);
    }

    #[test]
    fn a_torn_tail_is_cut_by_the_next_seal_so_later_seals_are_read_back() {
        let (dir, ds, a, b) = two_data_files();
        let seals = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        seals.seal_new(std::slice::from_ref(&a)).unwrap();
        let path = dir.path().join(SUMS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7, 0, b'x']); // a torn entry
        std::fs::write(&path, &bytes).unwrap();
        let seals = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        // loading never writes (a reader process loads it too)
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        seals.seal_new(std::slice::from_ref(&b)).unwrap();
        let again = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        assert!(again.is_sealed("a.lance") && again.is_sealed("b.lance"));
    }

    #[test]
    fn a_changed_file_is_refused_naming_it_and_a_good_one_is_checked_once() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("data.lance");
        std::fs::create_dir_all(ds.join("data")).unwrap();
        let f = ds.join("data").join("x.lance");
        std::fs::write(&f, b"hello lance").unwrap();
        let seals = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        assert_eq!(seals.seal_new(std::slice::from_ref(&f)).unwrap(), 1);
        let again = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        assert!(again.is_sealed("x.lance"));
        again.verify(["x.lance"], 0).unwrap();
        // checked once: a later change is not looked at again by this handle
        std::fs::write(&f, b"hello lancf").unwrap();
        again.verify(["x.lance"], 0).unwrap();
        let fresh = Seals::load(dir.path(), &ds, crate::store::real()).unwrap();
        let err = fresh.verify(["x.lance"], 42).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("x.lance") && text.contains("offset 42"),
            "{text}"
        );
    }
}

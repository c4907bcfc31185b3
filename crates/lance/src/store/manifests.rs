//! Torn manifests set aside at open.
//!
//! A power loss between Lance publishing a manifest and the fsync that follows
//! (`object`) can leave the manifest's name with a prefix of its bytes, or garbage at
//! its end. Lance trusts the footer of the newest manifest (a damaged one can make it
//! panic), so before a local dataset is opened, the newest manifests are checked from
//! the newest down, and each one whose footer does not hold (magic, metadata offset
//! and message length within the file) is renamed to `{name}.torn`, which Lance does
//! not read.
//!
//! Invariant: only a manifest whose commit was never reported durable can be torn
//! (a flush returns after the manifest's fsync), so setting it aside rolls back a
//! commit whose records are still in the WAL; a damaged manifest of a durable commit
//! is set aside too, and the WAL, checkpointed past it, then reports the gap as an
//! error rather than letting a record go missing silently.

use std::path::{Path, PathBuf};

use super::Disk;
use crate::error::{Error, Result};

/// The magic ending every Lance manifest.
const MAGIC: &[u8; 4] = b"LANC";
/// Footer: metadata offset (u64), format version (u16, u16), magic.
const FOOTER_BYTES: usize = 16;

/// Whether the bytes of a manifest end in a footer that points inside them.
fn holds(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len < FOOTER_BYTES || !bytes.ends_with(MAGIC) {
        return false;
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[len - FOOTER_BYTES..len - 8]);
    let Ok(offset) = usize::try_from(u64::from_le_bytes(offset)) else {
        return false;
    };
    let body_end = len - FOOTER_BYTES;
    let Some(prefix) = bytes.get(offset..offset.saturating_add(4)) else {
        return false;
    };
    let message = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    offset + 4 <= body_end && message <= body_end - offset - 4
}

/// The version a manifest file name stands for (both of Lance's naming schemes).
pub(crate) fn version_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".manifest")?;
    let n: u64 = stem.parse().ok()?;
    Some(if stem.len() == 20 { u64::MAX - n } else { n })
}

/// Renames the torn manifests at the top of `dataset`'s versions aside (see the
/// module docs); returns the paths set aside.
pub(crate) fn set_aside_torn(dataset: &Path, disk: &dyn Disk) -> Result<Vec<PathBuf>> {
    let dir = dataset.join("_versions");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir)(e)),
    };
    let mut manifests = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("list", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = version_of(&name) {
            manifests.push((version, entry.path()));
        }
    }
    manifests.sort_by_key(|m| std::cmp::Reverse(m.0));
    let mut set_aside = Vec::new();
    for (_, path) in manifests {
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        if holds(&bytes) {
            break;
        }
        let mut torn = path.clone().into_os_string();
        torn.push(".torn");
        let torn = PathBuf::from(torn);
        disk.rename(&path, &torn)
            .map_err(Error::io("set aside the torn manifest", &path))?;
        set_aside.push(path);
    }
    if !set_aside.is_empty() {
        disk.sync_dir(&dir)
            .map_err(Error::io("fsync directory", &dir))?;
    }
    Ok(set_aside)
}

/// Whether a local dataset directory holds a committed version. A first commit
/// interrupted by a crash leaves data files and no manifest: nothing of it was ever
/// visible, and the bucket starts empty (with a WAL, its records are still there, as
/// the WAL was not checkpointed).
pub(crate) fn has_manifest(uri: &str) -> bool {
    std::fs::read_dir(Path::new(uri).join("_versions")).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".manifest")))
    })
}

#[cfg(test)]
mod tests {
    use super::{holds, version_of};

    fn manifest(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 3];
        let offset = out.len() as u64;
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&[0, 0, 1, 0]);
        out.extend_from_slice(b"LANC");
        out
    }

    #[test]
    fn a_manifest_holds_only_with_its_whole_footer() {
        let good = manifest(b"protobuf bytes");
        assert!(holds(&good));
        for cut in 0..good.len() {
            assert!(!holds(&good[..cut]), "a prefix of {cut} bytes");
        }
        let mut garbled = good.clone();
        let n = garbled.len();
        garbled[n - 16] = 0xff;
        assert!(!holds(&garbled));
    }

    #[test]
    fn both_naming_schemes_give_the_version() {
        assert_eq!(version_of("3.manifest"), Some(3));
        assert_eq!(version_of("18446744073709551612.manifest"), Some(3));
        assert_eq!(version_of("version_hint.json"), None);
    }
}

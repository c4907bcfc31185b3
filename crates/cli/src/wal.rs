//! `persisting wal inspect` and `persisting wal verify`: read-only looks at a WAL.

use std::path::{Path, PathBuf};

use persisting::WAL_DIR;
use persisting::wal::{Inspection, SegmentStatus, inspect as inspect_dir};

use crate::CliResult;

fn wal_dir(path: &Path) -> CliResult<PathBuf> {
    let nested = path.join(WAL_DIR);
    let dir = if nested.is_dir() {
        nested
    } else {
        path.to_path_buf()
    };
    if !dir.is_dir() {
        return Err(format!("no WAL at {}", path.display()));
    }
    Ok(dir)
}

fn load(path: &Path) -> CliResult<(PathBuf, Inspection)> {
    let dir = wal_dir(path)?;
    let found = inspect_dir(&dir).map_err(|e| e.to_string())?;
    Ok((dir, found))
}

/// Prints one line per segment.
pub fn inspect(path: &Path) -> CliResult {
    let (dir, found) = load(path)?;
    crate::emit(format!(
        "{:<28} {:>12} {:>12} {:>8} {:>12}  status",
        "segment", "first LSN", "next LSN", "frames", "bytes"
    ));
    for s in &found.segments {
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let status = match &s.status {
            SegmentStatus::Ok => "ok".to_owned(),
            SegmentStatus::TornTail { offset, detail } => {
                format!("torn tail at byte {offset} ({detail}); open cuts it")
            }
            SegmentStatus::Corrupted { offset, detail } => {
                format!("CORRUPTED at byte {offset}: {detail}")
            }
        };
        let mut flags = String::new();
        if s.pending {
            flags.push_str(" pending");
        }
        if s.checkpoint_base() {
            flags.push_str(" checkpoint-base");
        }
        crate::emit(format!(
            "{name:<28} {:>12} {:>12} {:>8} {:>12}  {status}{flags}",
            s.first_lsn, s.next_lsn, s.frames, s.file_bytes
        ));
    }
    crate::emit(format!(
        "{}: {} segments, {} entries, {} bytes",
        dir.display(),
        found.segments.len(),
        found.entries(),
        found.total_bytes()
    ));
    Ok(())
}

/// Fails naming file and offset if a strict open would refuse the WAL.
pub fn verify(path: &Path) -> CliResult {
    let (dir, found) = load(path)?;
    if let Some((file, offset, detail)) = found.first_corruption() {
        return Err(format!(
            "WAL corrupted: {} at byte {offset}: {detail}",
            file.display()
        ));
    }
    let torn = found
        .segments
        .iter()
        .any(|s| matches!(s.status, SegmentStatus::TornTail { .. }));
    crate::emit(format!(
        "{}: ok, {} entries in {} segments{}",
        dir.display(),
        found.entries(),
        found.segments.len(),
        if torn {
            " (a torn tail, cut off at the next open)"
        } else {
            ""
        }
    ));
    Ok(())
}

//! `persisting trim`, `persisting snapshot create|list|delete` and `get --snapshot`:
//! a bucket's data lifetime from the command line, on local paths and at URIs.

use persisting::PersistingBackend;
use persisting::lance::{LanceBucket, Snapshot};

use crate::CliResult;
use crate::open::{BackendArgs, Opened};

/// The bucket PATH names, opened for writing (a topic is refused: trims and snapshots
/// are per bucket).
async fn bucket(target: &BackendArgs) -> CliResult<Opened> {
    if target.topic.is_some() {
        return Err(
            "trims and snapshots work on one bucket: give its directory, without --topic".into(),
        );
    }
    let opened = target.open_for_write(false).await?;
    match &opened {
        Opened::Bucket(_) => Ok(opened),
        _ => Err(format!(
            "{} is a topic's directory: give one bucket's directory (bucket_N)",
            target.path.display()
        )),
    }
}

fn stored(opened: &Opened) -> CliResult<&PersistingBackend> {
    match opened {
        Opened::Bucket(b) => b.stored().map_err(|e| e.to_string()),
        _ => Err("not one bucket".into()),
    }
}

/// `persisting trim PATH --before N`.
pub async fn trim(target: BackendArgs, before: u64) -> CliResult {
    let opened = bucket(&target).await?;
    let result = stored(&opened)?.trim(before).await;
    let closed = opened.close().await;
    let report = result.map_err(|e| e.to_string())?;
    closed?;
    eprintln!(
        "trimmed {}: {} records in {} fragments removed, log start {} ({} files, {} bytes freed now; offsets unchanged)",
        target.path.display(),
        report.records,
        report.fragments,
        report.log_start,
        report.files_removed,
        report.bytes_removed
    );
    Ok(())
}

/// A snapshot as one line of text.
fn line(s: &Snapshot) -> String {
    let when = s
        .created_unix_seconds()
        .map_or_else(|| "-".to_owned(), |t| format!("{}", t as u64));
    format!(
        "{}  version {}  offsets {}..{}  created {when}",
        s.name, s.version, s.log_start, s.end_offset
    )
}

fn json(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "version": s.version,
        "log_start": s.log_start,
        "end_offset": s.end_offset,
        "created_at": s.created_unix_seconds(),
    })
}

/// `persisting snapshot create PATH NAME`.
pub async fn create(target: BackendArgs, name: &str) -> CliResult {
    let opened = bucket(&target).await?;
    let result = stored(&opened)?.snapshot(name).await;
    let closed = opened.close().await;
    let snapshot = result.map_err(|e| e.to_string())?;
    closed?;
    crate::emit(line(&snapshot));
    Ok(())
}

/// `persisting snapshot delete PATH NAME`.
pub async fn delete(target: BackendArgs, name: &str) -> CliResult {
    let opened = bucket(&target).await?;
    let result = stored(&opened)?.delete_snapshot(name).await;
    let closed = opened.close().await;
    result.map_err(|e| e.to_string())?;
    closed?;
    eprintln!("deleted snapshot {name} of {}", target.path.display());
    Ok(())
}

/// The snapshots of the bucket PATH names, read without its writer.
pub async fn snapshots(target: &BackendArgs) -> CliResult<Vec<Snapshot>> {
    let opts = target.lance_options()?;
    let b = LanceBucket::open(&target.path, opts)
        .await
        .map_err(|e| e.to_string())?;
    b.snapshots().await.map_err(|e| e.to_string())
}

/// `persisting snapshot list PATH`.
pub async fn list(target: BackendArgs, as_json: bool) -> CliResult {
    let all = snapshots(&target).await?;
    if as_json {
        let text = serde_json::to_string_pretty(&all.iter().map(json).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
        crate::emit(text);
    } else if all.is_empty() {
        eprintln!("{} has no snapshots", target.path.display());
    } else {
        for s in &all {
            crate::emit(line(s));
        }
    }
    Ok(())
}

/// `persisting get PATH --snapshot NAME`: read without the writer's lock.
pub async fn get(target: BackendArgs, name: &str, offset: u64, limit: Option<usize>) -> CliResult {
    let opts = target.lance_options()?;
    let reader = LanceBucket::open_snapshot(&target.path, opts, name)
        .await
        .map_err(|e| e.to_string())?;
    let records = reader
        .read(offset, limit.unwrap_or(usize::MAX))
        .await
        .map_err(|e| e.to_string())?;
    crate::print_records(&records)
}

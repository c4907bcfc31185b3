//! A dataset version's log start, as its config records it (the format is in
//! `docs/lance-layout.md`, "Log start, trims and snapshots"; trims write it, in
//! `retention.rs`): the offset of the version's first row. Read at open, after every
//! commit and by snapshots; it needs nothing of the bucket.

use lance::Dataset;

use crate::error::{Error, Result};

/// The dataset config key holding `"{log_start}@{from_version}"`.
pub const LOG_START_KEY: &str = "persisting.log_start";
/// The dataset config key holding the log start of versions before
/// `from_version`.
pub const LOG_START_BEFORE_KEY: &str = "persisting.log_start_before";
/// The log start a version of a dataset carries, and, when a trim of it is pending
/// (its delete has not landed), that trim: `(log start, pending (to, from_version))`.
pub(crate) fn log_start_of(ds: &Dataset) -> Result<(u64, Option<(u64, u64)>)> {
    let config = ds.config();
    let Some(raw) = config.get(LOG_START_KEY) else {
        return Ok((0, None));
    };
    let damaged = |reason: String| Error::LogStartDamaged {
        dataset: ds.uri().to_owned(),
        reason,
    };
    let parsed = raw
        .split_once('@')
        .and_then(|(l, e)| Some((l.parse::<u64>().ok()?, e.parse::<u64>().ok()?)));
    let Some((to, from_version)) = parsed else {
        return Err(damaged(format!("{LOG_START_KEY} = {raw:?}")));
    };
    let before = match config.get(LOG_START_BEFORE_KEY) {
        Some(b) => b
            .parse::<u64>()
            .map_err(|_| damaged(format!("{LOG_START_BEFORE_KEY} = {b:?}")))?,
        None => return Err(damaged(format!("{LOG_START_BEFORE_KEY} is missing"))),
    };
    if before > to {
        return Err(damaged(format!("it moves back from {before} to {to}")));
    }
    let version = ds.manifest().version;
    Ok(if version >= from_version {
        (to, None)
    } else {
        (before, Some((to, from_version)))
    })
}

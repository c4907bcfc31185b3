//! Which data files a range of rows is in, and the check of those files against their
//! seals before Lance reads them (the first read of each, per handle). Used by reads,
//! compaction and schema evolution.

use std::ops::Range;
use std::sync::Arc;

use lance::Dataset;

use crate::error::Result;
use crate::store::seals::Seals;
use crate::threads::blocking;

/// The data file names (in `data/`) of the fragments holding positions in `range` whose
/// row count passes `keep`.
pub(crate) fn fragment_files(
    ds: &Dataset,
    keep: impl Fn(u64) -> bool,
    range: Range<u64>,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0u64;
    for frag in ds.manifest().fragments.iter() {
        if at >= range.end {
            break;
        }
        let rows = frag.num_rows().map_or(u64::MAX, |r| r as u64);
        let next = at.saturating_add(rows);
        if next > range.start && keep(rows) {
            for file in &frag.files {
                let name = file.path.rsplit('/').next().unwrap_or(&file.path);
                names.push(name.to_owned());
            }
        }
        at = next;
    }
    names
}

/// Checks the sealed data files among `names` not checked yet (by this handle's
/// `seals`), off the async threads, and without leaving them at all once every file of
/// `names` is checked: the steady state of reads.
pub(crate) async fn check_files(
    seals: Option<Arc<Seals>>,
    names: Vec<String>,
    offset: u64,
    uri: &str,
) -> Result<()> {
    let Some(seals) = seals else {
        return Ok(());
    };
    let unchecked = seals.unchecked(names);
    if unchecked.is_empty() {
        return Ok(());
    }
    blocking("check the data files of", uri, move || {
        seals.verify(unchecked.iter().map(String::as_str), offset)
    })
    .await?
}

//! Reading a bucket back and judging it against the workload.

use persisting::{PersistingBackend, StorageBackend, StorageError, Value};

use crate::workload::{Pinned, RunConfig, matches};

/// What one check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Records present (the bucket's count after recovery).
    pub present: u64,
    /// Acknowledged records missing.
    pub lost: u64,
    /// Records found at an offset that holds another offset's record.
    pub duplicated: u64,
    /// Records that are not what was written at their offset.
    pub corrupted: u64,
}

impl Verdict {
    /// No loss, no duplicate, no corruption.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.corrupted == 0
    }
}

/// Totals over a fuzz run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Iterations run.
    pub iterations: u64,
    /// The iterations that failed, each as `{mode} seed {seed}: {what was found}`:
    /// printed again at the end of a run, where a log's tail shows them.
    pub failures: Vec<String>,
    /// Crashes (kills or simulated power losses) injected.
    pub kills: u64,
    /// Records acknowledged to the workload.
    pub acknowledged: u64,
    /// Acknowledged records lost.
    pub lost: u64,
    /// Duplicated records.
    pub duplicated: u64,
    /// Corrupted records returned.
    pub corrupted: u64,
    /// Damage reported as an error (the right answer to corruption).
    pub errors_detected: u64,
    /// Consumer group commits acknowledged to the workload.
    pub group_commits: u64,
    /// Trims acknowledged to the workload.
    pub trims: u64,
    /// Snapshots acknowledged to the workload.
    pub snapshots: u64,
    /// Windows in which Lance fsyncs failed (power mode).
    pub sync_failures: u64,
}

impl Totals {
    /// Adds another run's totals.
    pub fn add(&mut self, o: &Totals) {
        self.iterations += o.iterations;
        self.failures.extend(o.failures.iter().cloned());
        self.kills += o.kills;
        self.acknowledged += o.acknowledged;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.errors_detected += o.errors_detected;
        self.group_commits += o.group_commits;
        self.trims += o.trims;
        self.snapshots += o.snapshots;
        self.sync_failures += o.sync_failures;
    }

    /// Adds a check's findings.
    pub fn judge(&mut self, v: &Verdict) {
        self.lost += v.lost;
        self.duplicated += v.duplicated;
        self.corrupted += v.corrupted;
    }
}

/// Reads every record of `b` from its log start and compares it with the workload;
/// `acked` records must be there, and the log start must be at least `trimmed` (an
/// acknowledged trim's); a read below the log start must be refused.
pub async fn verify(
    b: &PersistingBackend,
    cfg: &RunConfig,
    acked: u64,
    trimmed: u64,
) -> Result<Verdict, String> {
    let present = b.total_count();
    let mut v = Verdict {
        present,
        lost: acked.saturating_sub(present),
        ..Verdict::default()
    };
    let mut offset = b.log_start().await;
    if offset < trimmed {
        println!("  the log start is {offset}, below the acknowledged trim's {trimmed}");
        v.corrupted += trimmed - offset;
    }
    if offset > 0
        && !matches!(b.get(offset - 1, Some(1)).await, Err(e) if below_log_start(&e).is_some())
    {
        println!("  a read below the log start {offset} was not refused");
        v.corrupted += 1;
    }
    while offset < present {
        let got = match b.get(offset, Some(2000)).await {
            Err(e) => match below_log_start(&e) {
                // retention moved the log start meanwhile (the flush owner trims)
                Some(start) if start > offset => {
                    offset = start;
                    continue;
                }
                _ => return Err(format!("reading at offset {offset}: {e}")),
            },
            Ok(got) => got,
        };
        if got.is_empty() {
            // the count promised records that cannot be read: they are lost
            v.lost += acked.saturating_sub(offset).min(present - offset);
            break;
        }
        for r in &got {
            if !matches(cfg, offset, r) {
                match r.get("seq") {
                    Some(Value::Int(s)) if *s as u64 != offset && matches(cfg, *s as u64, r) => {
                        v.duplicated += 1
                    }
                    _ => v.corrupted += 1,
                }
            }
            offset += 1;
        }
    }
    Ok(v)
}

/// Checks the workload's consumer groups after a crash: none went back from an
/// acknowledged commit (`owed[g]`), none points past the bucket's records. Returns
/// the violations found.
pub async fn verify_groups(b: &dyn StorageBackend, owed: &[u64]) -> Result<Vec<String>, String> {
    let end = b.total_count();
    let mut bad = Vec::new();
    for (g, group) in crate::workload::GROUPS.iter().enumerate() {
        let now = b
            .committed_offset(group)
            .await
            .map_err(|e| format!("committed offset of {group}: {e}"))?
            .map(|c| c.offset);
        let owed = owed.get(g).copied().unwrap_or(0);
        match now {
            None if owed > 0 => bad.push(format!(
                "group {group} lost its committed offset (acknowledged commit {owed})"
            )),
            Some(o) if o < owed => bad.push(format!(
                "group {group} went back to {o} from an acknowledged commit of {owed}"
            )),
            Some(o) if o > end => bad.push(format!(
                "group {group} is at {o}, past the bucket's {end} records"
            )),
            _ => {}
        }
    }
    Ok(bad)
}

/// The log start a read was refused below, if that is what `e` is.
pub fn below_log_start(e: &StorageError) -> Option<u64> {
    match e {
        StorageError::Lance(persisting::lance::Error::BelowLogStart { log_start, .. }) => {
            Some(*log_start)
        }
        _ => None,
    }
}

/// Checks the last snapshot acknowledged: it is there and holds exactly the records
/// of its offsets. Returns the violations found.
pub async fn verify_snapshot(
    b: &PersistingBackend,
    cfg: &RunConfig,
    pinned: Option<&Pinned>,
) -> Result<Vec<String>, String> {
    let Some(p) = pinned else {
        return Ok(Vec::new());
    };
    let got = match b.get_snapshot(&p.name, p.start, None).await {
        Ok(got) => got,
        Err(e) => return Ok(vec![format!("snapshot {} cannot be read: {e}", p.name)]),
    };
    let mut bad = Vec::new();
    if got.len() as u64 != p.end - p.start {
        bad.push(format!(
            "snapshot {} holds {} records, {} were pinned",
            p.name,
            got.len(),
            p.end - p.start
        ));
    }
    if let Some((k, _)) = got
        .iter()
        .enumerate()
        .find(|(k, r)| !matches(cfg, p.start + *k as u64, r))
    {
        bad.push(format!(
            "snapshot {} differs at offset {}",
            p.name,
            p.start + k as u64
        ));
    }
    Ok(bad)
}

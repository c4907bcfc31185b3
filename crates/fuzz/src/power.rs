//! Power-loss mode: the workload in-process with the whole bucket on simulated disks:
//! the WAL on the WAL's simulated file system, Lance's files on [`SimDisk`].
//!
//! A crash cuts the power of both at once: unsynced WAL bytes and unsynced Lance
//! files (data, transaction and manifest files, the seals file, directory entries)
//! are dropped, cut to a random prefix, or torn. Under `wal_sync_interval = 0` every
//! acknowledged record must survive; under an interval, records may be lost only from
//! the end (never one in the middle while a later one survives), and never one that a
//! flush made durable in Lance. Data files sealed when a flush returned must still be
//! sealed after the crash.
//!
//! In some rounds, the last operations before the crash (flushes, group commits,
//! trims, snapshots, reads; no puts, which would wait at the bound) run while one kind
//! of Lance fsync fails ([`SimDisk::fail_syncs`]: a dying disk): what they did not get
//! acknowledged is not owed, and no record acknowledged before may be lost.
//!
//! `--without-fsync KIND` makes the Lance disk ignore one kind of fsync (a mutation
//! check): the run is expected to fail.

use std::path::Path;
use std::sync::Arc;

use persisting::lance::{DATASET_DIR, SimCrash, SimDisk, SyncKind, sealed_files};
use persisting::wal::{CrashMode, SimFs, SimRng};
use persisting::{PersistingBackend, StorageBackend};

use crate::check::{Totals, verify, verify_groups, verify_snapshot};
use crate::runtime;
use crate::workload::{Applied, GROUPS, Op, Pinned, RunConfig, apply, next_op};

/// Crashes per run.
const CRASHES: u64 = 3;

/// The most operations of a round run while fsyncs fail.
const FAILING_OPS_MAX: u64 = 20;

/// Which fsyncs fail, and from which operation of the round on (until its crash).
fn failure_plan(rng: &mut SimRng, ops: u64) -> Option<(SyncKind, u64)> {
    if rng.below(3) != 0 {
        return None;
    }
    let kind = match rng.below(3) {
        0 => SyncKind::DataFiles,
        1 => SyncKind::ManifestDir,
        _ => SyncKind::Seals,
    };
    Some((kind, ops.saturating_sub(1 + rng.below(FAILING_OPS_MAX))))
}

/// Seals owed after a crash: those present when a flush returned whose files still
/// exist, missing from the seals file now.
fn seals_lost(dir: &Path, owed: &[String]) -> Result<Vec<String>, String> {
    let now = sealed_files(dir).map_err(|e| e.to_string())?;
    let data = dir.join(DATASET_DIR).join("data");
    Ok(owed
        .iter()
        .filter(|name| data.join(name).exists() && !now.contains(name))
        .cloned()
        .collect())
}

/// One run: workload, crash, recover and check, several times.
pub fn iteration(seed: u64, skipped: Option<SyncKind>) -> Result<Totals, String> {
    let cfg = RunConfig::from_seed(seed);
    println!("power seed {seed}: {}", cfg.describe());
    let tmp = std::env::temp_dir().join(format!(
        "persisting-fuzz-power-{seed}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let sim = SimFs::new();
    let disk = SimDisk::new(&tmp);
    disk.skip_syncs(skipped);
    let mut rng = SimRng::new(seed ^ 0x90e4);
    // a generator of its own: a seed's workload stays what it was
    let mut failures = SimRng::new(seed ^ 0xfa11);
    let mut t = Totals {
        iterations: 1,
        ..Totals::default()
    };
    let strict = cfg.options.wal_sync_interval.is_zero();
    // what must survive: acknowledged records (interval 0), or flushed ones
    let mut owed = 0u64;
    let mut owed_seals: Vec<String> = Vec::new();
    // acknowledged consumer group commits: a crash never takes one back
    let mut owed_commits = [0u64; GROUPS.len()];
    // an acknowledged trim's log start, and the last snapshot acknowledged
    let mut owed_trim = 0u64;
    let mut owed_snapshot: Option<Pinned> = None;
    let mut problem = None;
    for round in 0..=CRASHES {
        // a runtime per power cycle: what the crashed process was running stops with it
        let rt = runtime()?;
        let result: Result<(PersistingBackend, u64), String> = rt.block_on(async {
            let b = PersistingBackend::open_with_disks(
                0,
                &tmp,
                cfg.options.clone(),
                Arc::new(sim.clone()),
                Arc::new(disk.clone()),
            )
            .await
            .map_err(|e| format!("reopening after crash {round}: {e}"))?;
            let v = verify(&b, &cfg, owed, owed_trim).await?;
            t.judge(&v);
            let mut bad = verify_groups(&b, &owed_commits).await?;
            if !v.clean() {
                bad.push(format!(
                    "owed {owed}, present {}: lost {} duplicated {} corrupted {}",
                    v.present, v.lost, v.duplicated, v.corrupted
                ));
            }
            bad.extend(verify_snapshot(&b, &cfg, owed_snapshot.as_ref()).await?);
            if !bad.is_empty() {
                return Err(format!("after crash {round}: {}", bad.join("; ")));
            }
            let lost = seals_lost(&tmp, &owed_seals)?;
            if !lost.is_empty() {
                return Err(format!(
                    "after crash {round}: {} data files sealed by a flush are no longer sealed ({}{})",
                    lost.len(),
                    lost[..lost.len().min(3)].join(", "),
                    if lost.len() > 3 { ", …" } else { "" }
                ));
            }
            let mut next = b.total_count();
            let mut flushed = next;
            if round < CRASHES {
                let ops = 20 + rng.below(150);
                let plan = failure_plan(&mut failures, ops);
                let mut refused = 0;
                for k in 0..ops {
                    let failing = plan.is_some_and(|(_, from)| k >= from);
                    if let Some((kind, from)) = plan
                        && k == from
                    {
                        disk.fail_syncs(Some(kind));
                        t.sync_failures += 1;
                    }
                    let op = next_op(&mut rng);
                    if failing && matches!(op, Op::Put | Op::PutBatch(_)) {
                        // a put at the bound would wait `put_timeout` for a flush
                        // that cannot succeed: the window runs the other operations
                        // (what was put before it is what must survive)
                        continue;
                    }
                    let snapshot = matches!(op, Op::Snapshot(_));
                    let applied = match apply(&b, &cfg, op, next).await {
                        Err(_) if failing => {
                            // not acknowledged, so not owed; a snapshot operation may
                            // have deleted the one owed before it failed
                            if snapshot {
                                owed_snapshot = None;
                            }
                            refused += 1;
                            continue;
                        }
                        other => other?,
                    };
                    match applied {
                        Applied::Acked(n) => next = n,
                        Applied::Flushed => {
                            flushed = next;
                            owed_seals = sealed_files(&tmp).map_err(|e| e.to_string())?;
                        }
                        Applied::Read => {}
                        Applied::Committed(g, offset) => {
                            t.group_commits += 1;
                            owed_commits[g] = owed_commits[g].max(offset);
                        }
                        Applied::Trimmed(log_start) => {
                            t.trims += 1;
                            owed_trim = owed_trim.max(log_start);
                        }
                        Applied::Snapshot(p) => {
                            t.snapshots += 1;
                            owed_snapshot = Some(p);
                        }
                    }
                }
                if let Some((kind, from)) = plan {
                    println!(
                        "  round {round}: {kind:?} fsyncs failed from operation {from} of {ops}; {refused} operations failed"
                    );
                }
            }
            let persisted = b.stats().await.map_err(|e| e.to_string())?.persisted_count;
            Ok((b, if strict { next } else { flushed.max(persisted) }))
        });
        let (b, must_survive) = match result {
            Ok(r) => r,
            Err(e) => {
                println!("  {e}");
                problem = Some(e);
                break;
            }
        };
        if round < CRASHES {
            t.acknowledged += must_survive.saturating_sub(owed);
            owed = must_survive;
            let (wal_mode, lance_mode) = match rng.below(3) {
                0 => (CrashMode::DropUnsynced, SimCrash::DropUnsynced),
                1 => (CrashMode::KeepPrefix, SimCrash::KeepPrefix),
                _ => (CrashMode::TearLastWrite, SimCrash::TearLastWrite),
            };
            // both disks lose power at one moment: Lance's first (it refuses every
            // change from then on), then the WAL's
            disk.crash(lance_mode, rng.next_u64())
                .map_err(|e| format!("simulating a power loss in {}: {e}", tmp.display()))?;
            sim.crash(wal_mode, rng.next_u64());
            t.kills += 1;
        }
        drop(b);
        // the tasks of the crashed handle (a commit, say) end here, before the power
        // is back: a real power loss stops them all at once
        rt.shutdown_timeout(std::time::Duration::from_secs(10));
        disk.power_on();
        disk.fail_syncs(None);
    }
    if let Some(problem) = problem {
        t.failures.push(format!(
            "power seed {seed}: {problem} (Lance directory kept at {})",
            tmp.display()
        ));
        println!(
            "power seed {seed}: FAILED; Lance directory kept at {} (replay: --seed {seed})",
            tmp.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(t)
}

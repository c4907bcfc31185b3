//! Power-loss mode: the workload in-process with the WAL on the simulated file system.
//!
//! A crash drops unsynced WAL bytes, keeps a random prefix of them, or tears the last
//! write. Under `wal_sync_interval = 0` every acknowledged record must survive; under
//! an interval, records may be lost only from the end (never one in the middle while a
//! later one survives), and never one that a flush made durable in Lance. Lance's own
//! files are on the real disk (the kill mode covers them).

use std::sync::Arc;

use persisting::wal::{CrashMode, SimFs, SimRng};
use persisting::{PersistingBackend, StorageBackend};

use crate::check::{Totals, verify};
use crate::runtime;
use crate::workload::{Applied, RunConfig, apply, next_op};

/// Crashes per run.
const CRASHES: u64 = 3;

/// One run: workload, crash, recover and check, several times.
pub fn iteration(seed: u64) -> Result<Totals, String> {
    let cfg = RunConfig::from_seed(seed);
    println!("power seed {seed}: {}", cfg.describe());
    let tmp = std::env::temp_dir().join(format!(
        "persisting-fuzz-power-{seed}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let sim = SimFs::new();
    let mut rng = SimRng::new(seed ^ 0x90e4);
    let mut t = Totals {
        iterations: 1,
        ..Totals::default()
    };
    let strict = cfg.options.wal_sync_interval.is_zero();
    // what must survive: acknowledged records (interval 0), or flushed ones
    let mut owed = 0u64;
    let mut ok = true;
    let rt = runtime()?;
    for round in 0..=CRASHES {
        let result: Result<(PersistingBackend, u64), String> = rt.block_on(async {
            let b = PersistingBackend::open_with_wal_fs(0, &tmp, cfg.options.clone(), Arc::new(sim.clone()))
                .await
                .map_err(|e| format!("reopening after crash {round}: {e}"))?;
            let v = verify(&b, &cfg, owed).await?;
            t.judge(&v);
            if !v.clean() {
                println!(
                    "  after crash {round}: owed {owed}, present {}: lost {} duplicated {} corrupted {}",
                    v.present, v.lost, v.duplicated, v.corrupted
                );
            }
            let mut next = b.total_count();
            let mut flushed = next;
            if round < CRASHES {
                for _ in 0..(20 + rng.below(150)) {
                    match apply(&b, &cfg, next_op(&mut rng), next).await? {
                        Applied::Acked(n) => next = n,
                        Applied::Flushed => flushed = next,
                        Applied::Read => {}
                    }
                }
            }
            let persisted = b.stats().await.map_err(|e| e.to_string())?.persisted_count;
            Ok((b, if strict { next } else { flushed.max(persisted) }))
        });
        let (b, must_survive) = match result {
            Ok(r) => r,
            Err(e) => {
                println!("  {e}");
                ok = false;
                break;
            }
        };
        ok &= t.lost + t.duplicated + t.corrupted == 0;
        if round < CRASHES {
            t.acknowledged += must_survive.saturating_sub(owed);
            owed = must_survive;
            let mode = match rng.below(3) {
                0 => CrashMode::DropUnsynced,
                1 => CrashMode::KeepPrefix,
                _ => CrashMode::TearLastWrite,
            };
            sim.crash(mode, rng.next_u64());
            t.kills += 1;
        }
        drop(b);
        if !ok {
            break;
        }
    }
    if ok {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        t.failed = 1;
        println!(
            "power seed {seed}: FAILED; Lance directory kept at {} (replay: --seed {seed})",
            tmp.display()
        );
    }
    Ok(t)
}

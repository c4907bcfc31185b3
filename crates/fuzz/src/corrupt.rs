//! Corruption mode: damage the files of a closed bucket, then open and read it.
//!
//! Damage: flipped bits, a zeroed range, a truncation, a duplicated range (copied over
//! another place or appended), in a WAL segment or a Lance data file. The bucket must
//! then either open and return only intact records (a prefix, per the recovery mode),
//! or fail with an error; a panic, a hang or a damaged record returned is a failure.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::Duration;

use persisting::PersistingBackend;
use persisting::wal::SimRng;

use crate::check::{Totals, Verdict, verify};
use crate::runtime;
use crate::workload::{Applied, RunConfig, apply, next_op};

/// Longest an open and full read of a damaged bucket may take.
const HANG_TIMEOUT: Duration = Duration::from_secs(120);

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    // oldest first: Lance names data files at random, so name order would make a seed
    // pick a different file on replay
    out.sort_by_key(|p| {
        let modified = std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (modified, p.clone())
    });
    out
}

/// Writes a bucket and leaves it closed, some records only in the WAL.
fn build(dir: &Path, cfg: &RunConfig, rng: &mut SimRng) -> Result<u64, String> {
    runtime()?.block_on(async {
        let b = PersistingBackend::open(0, dir, cfg.options.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut next = 0;
        for _ in 0..(30 + rng.below(120)) {
            if let Applied::Acked(n) = apply(&b, cfg, next_op(rng), next).await? {
                next = n;
            }
        }
        Ok(next)
    })
}

/// Damages `path`; returns what was done.
fn damage(path: &Path, rng: &mut SimRng) -> Result<String, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Ok("nothing (empty file)".to_owned());
    }
    let len = bytes.len() as u64;
    let at = rng.below(len) as usize;
    let span = (1 + rng.below(512)).min(len - at as u64) as usize;
    let what = match rng.below(5) {
        0 => {
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let i = rng.below(len) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
            format!("flipped {flips} bits")
        }
        1 => {
            bytes[at..at + span].fill(0);
            format!("zeroed {span} bytes at {at}")
        }
        2 => {
            bytes.truncate(at);
            format!("truncated to {at} bytes")
        }
        3 => {
            let src = rng.below(len - span as u64 + 1) as usize;
            let copy = bytes[src..src + span].to_vec();
            bytes[at..at + span].copy_from_slice(&copy);
            format!("copied {span} bytes from {src} over {at}")
        }
        _ => {
            let copy = bytes[at..at + span].to_vec();
            bytes.extend_from_slice(&copy);
            format!("appended a copy of {span} bytes from {at}")
        }
    };
    std::fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(what)
}

/// Opens and reads the damaged bucket on a thread of its own, so that a panic or a
/// hang is seen and reported instead of ending the fuzzer.
fn open_damaged(dir: &Path, cfg: &RunConfig) -> Result<Result<Verdict, String>, String> {
    let (tx, rx) = channel();
    let dir = dir.to_path_buf();
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| {
            runtime()?.block_on(async {
                let b = PersistingBackend::open(0, &dir, cfg.options.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                verify(&b, &cfg, 0, 0).await
            })
        });
        let _ = tx.send(outcome.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned())
        }));
    });
    match rx.recv_timeout(HANG_TIMEOUT) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(panic)) => Err(format!("PANIC: {panic}")),
        Err(_) => Err(format!("HANG: no answer in {HANG_TIMEOUT:?}")),
    }
}

/// One run: build, damage one file, open and judge.
pub fn iteration(base: &Path, seed: u64) -> Result<Totals, String> {
    let cfg = RunConfig::from_seed(seed);
    let dir = base.join(format!("corrupt-{seed}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    let mut rng = SimRng::new(seed ^ 0xc0ff);
    let written = build(&dir, &cfg, &mut rng)?;
    let wal = files_in(&dir.join(persisting::WAL_DIR), ".wal");
    let lance = files_in(&dir.join("data.lance/data"), ".lance");
    let candidates = if !lance.is_empty() && (wal.is_empty() || rng.below(5) < 2) {
        lance
    } else {
        wal
    };
    let mut t = Totals {
        iterations: 1,
        ..Totals::default()
    };
    let Some(victim) = candidates
        .get(rng.below(candidates.len() as u64) as usize)
        .cloned()
    else {
        println!("corrupt seed {seed}: nothing to damage ({written} records)");
        return Ok(t);
    };
    let what = damage(&victim, &mut rng)?;
    let name = victim
        .strip_prefix(&dir)
        .unwrap_or(&victim)
        .display()
        .to_string();
    let (line, failed) = match open_damaged(&dir, &cfg) {
        Ok(Ok(v)) => {
            t.judge(&v);
            let line = format!(
                "corrupt seed {seed}: {what} in {name}: opened, {} of {written} records, {} damaged returned",
                v.present, v.corrupted
            );
            (line, !v.clean())
        }
        Ok(Err(e)) => {
            t.errors_detected += 1;
            (
                format!("corrupt seed {seed}: {what} in {name}: error: {e}"),
                false,
            )
        }
        Err(e) => (format!("corrupt seed {seed}: {what} in {name}: {e}"), true),
    };
    println!("{line}");
    if failed {
        t.failures.push(line);
        println!(
            "corrupt seed {seed}: FAILED; directory kept at {} (replay: --seed {seed})",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(t)
}

//! The seeded workload shared by every mode: run options, record shapes, operations.
//!
//! Invariant the checks rely on: the record at offset `i` of a run is a pure function
//! of the run's seed and `i` ([`record_at`]), so any process can tell whether what it
//! reads at an offset is what was written there, without a copy of the data. Shapes
//! vary with the offset: fields appear over time (schema evolution), an int field turns
//! float at a run-chosen offset (widening), and nested maps, lists, explicit nulls and
//! payloads of varied size come and go.

use std::time::Duration;

use persisting::wal::SimRng;
use persisting::{Codec, PersistingBackend, PersistingOptions, Record, StorageBackend, Value};

/// Options of one run, derived from its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The run's seed.
    pub seed: u64,
    /// Backend options.
    pub options: PersistingOptions,
    /// Offset from which field `m` holds floats instead of ints.
    pub widen_at: u64,
    /// Offsets at which the extra fields `f0..f3` first appear.
    pub field_from: [u64; 4],
}

impl RunConfig {
    /// The run of `seed`: codec, sync interval, small WAL and flush sizes so that
    /// rotation, checkpoints, flushes and compaction happen often.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SimRng::new(seed ^ 0x5eed);
        let compression = match rng.below(4) {
            0 => Codec::None,
            1 => Codec::Zstd { level: 3 },
            2 => Codec::Lz4,
            _ => Codec::Snappy,
        };
        let wal_sync_interval = if rng.below(2) == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(1 + rng.below(50))
        };
        let options = PersistingOptions {
            enable_wal: true,
            compression,
            wal_sync_interval,
            // 16 KiB to 256 KiB: segments of 4 KiB to 64 KiB
            max_wal_size: 16_384 << rng.below(5),
            flush_threshold: 20 + rng.below(400) as usize,
            batch_size: 1 + rng.below(200) as usize,
            // half the seeds: a fragment target so small that flushes write their
            // data files in parts (a generator of its own keeps older seeds' runs)
            target_rows_per_fragment: {
                let mut parts = SimRng::new(seed ^ 0x9a27);
                if parts.below(2) == 0 {
                    32 * (4 + parts.below(12) as usize)
                } else {
                    PersistingOptions::default().target_rows_per_fragment
                }
            },
            ..PersistingOptions::default()
        };
        // a third of the seeds keep only the last records (the flush owner trims
        // after flushes), a third remove old versions at once (Lance's cleanup runs
        // under the crashes); a generator of its own keeps older seeds' runs
        let mut life = SimRng::new(seed ^ 0x1f3e);
        let options = PersistingOptions {
            retention_records: (life.below(3) == 0).then(|| 200 + life.below(2000)),
            version_retention: match life.below(3) {
                0 => Duration::ZERO,
                _ => options.version_retention,
            },
            ..options
        };
        Self {
            seed,
            options,
            widen_at: rng.below(3000),
            field_from: [
                rng.below(500),
                rng.below(2000),
                rng.below(4000),
                rng.below(8000),
            ],
        }
    }

    /// The options as `key=value` strings (what the worker is started with).
    pub fn describe(&self) -> String {
        let o = &self.options;
        format!(
            "compression={} wal_sync_interval={}s max_wal_size={} flush_threshold={} target_rows_per_fragment={} widen_at={} retention_records={} version_retention={}s",
            o.compression.name(),
            o.wal_sync_interval.as_secs_f64(),
            o.max_wal_size,
            o.flush_threshold,
            o.target_rows_per_fragment,
            self.widen_at,
            o.retention_records
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            o.version_retention.as_secs_f64()
        )
    }
}

fn mix(seed: u64, i: u64) -> SimRng {
    SimRng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.rotate_left(17))
}

/// The record at offset `i` of the run.
pub fn record_at(cfg: &RunConfig, i: u64) -> Record {
    let mut rng = mix(cfg.seed, i);
    let mut r = Record::new();
    r.insert("id", Value::from(format!("r{i}")));
    r.insert("seq", Value::from(i as i64));
    if i >= cfg.widen_at {
        r.insert("m", Value::from(i as f64 + 0.5));
    } else {
        r.insert("m", Value::from(i as i64));
    }
    for (k, from) in cfg.field_from.iter().enumerate() {
        if i >= *from && rng.below(3) != 0 {
            r.insert(
                format!("f{k}"),
                Value::from(format!("v{}", rng.below(1000))),
            );
        }
    }
    match rng.below(6) {
        0 => {
            r.insert("maybe", Value::Null);
        }
        1 => {
            let mut nested = Record::new();
            nested.insert("a", Value::from(rng.below(100) as i64));
            nested.insert("b", Value::from("nested"));
            r.insert("nested", Value::from(nested));
        }
        2 => {
            let v: Vec<f64> = (0..4).map(|k| (i + k) as f64 / 4.0).collect();
            r.insert("vec", Value::from(v));
        }
        _ => {}
    }
    let text_len = rng.below(300) as usize;
    let text: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), text_len).collect();
    r.insert("text", Value::from(text));
    r
}

/// Whether `got`, read at offset `i`, is the record written there. The one change
/// allowed is the widening of `m` from int to float.
pub fn matches(cfg: &RunConfig, i: u64, got: &Record) -> bool {
    let want = record_at(cfg, i);
    if want == *got {
        return true;
    }
    if want.len() != got.len() {
        return false;
    }
    want.iter().zip(got.iter()).all(|((wk, wv), (gk, gv))| {
        wk == gk
            && (wv == gv
                || (wk == "m"
                    && matches!((wv, gv), (Value::Int(a), Value::Float(b)) if (*a as f64) == *b)))
    })
}

/// One step of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `put` of one record.
    Put,
    /// `put_batch` of this many records.
    PutBatch(u64),
    /// `flush`.
    Flush,
    /// `get` of a random range, checked.
    Read,
    /// A consumer group commit: group `GROUPS[.0]`, at an offset between its
    /// committed one and the bucket's end picked by `.1`.
    Commit(usize, u64),
    /// A trim before an offset between the log start and the end picked by `.0`.
    Trim(u64),
    /// A snapshot named after `.0`, after deleting the oldest one when two are kept
    /// (so the last snapshot acknowledged is never the one deleted).
    Snapshot(u64),
}

/// The consumer groups the workload commits for.
pub const GROUPS: [&str; 2] = ["g0", "g1"];

/// The next operation.
pub fn next_op(rng: &mut SimRng) -> Op {
    match rng.below(100) {
        0..=39 => Op::Put,
        40..=84 => {
            let max = if rng.below(10) == 0 { 500 } else { 40 };
            Op::PutBatch(1 + rng.below(max))
        }
        85..=91 => Op::Flush,
        92..=95 => Op::Commit(rng.below(GROUPS.len() as u64) as usize, rng.next_u64()),
        96..=97 => Op::Read,
        98 => Op::Trim(rng.next_u64()),
        _ => Op::Snapshot(rng.next_u64()),
    }
}

/// A snapshot acknowledged: its name and the offsets it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The snapshot's name.
    pub name: String,
    /// Its log start.
    pub start: u64,
    /// One past its last offset.
    pub end: u64,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Records were acknowledged: the next offset is now this.
    Acked(u64),
    /// A flush returned.
    Flushed,
    /// A read: left to the caller (which checks what it returns, or skips it).
    Read,
    /// A group commit returned: the group is at this offset or later.
    Committed(usize, u64),
    /// A trim returned: the log start is this or later.
    Trimmed(u64),
    /// A snapshot was taken.
    Snapshot(Pinned),
}

/// Runs one write step of the workload (`next`: the next offset to write).
pub async fn apply(
    b: &PersistingBackend,
    cfg: &RunConfig,
    op: Op,
    next: u64,
) -> Result<Applied, String> {
    match op {
        Op::Put => {
            b.put(record_at(cfg, next))
                .await
                .map_err(|e| format!("put {next}: {e}"))?;
            Ok(Applied::Acked(next + 1))
        }
        Op::PutBatch(n) => {
            let batch: Vec<Record> = (next..next + n).map(|i| record_at(cfg, i)).collect();
            b.put_batch(batch)
                .await
                .map_err(|e| format!("put_batch {next}+{n}: {e}"))?;
            Ok(Applied::Acked(next + n))
        }
        Op::Flush => {
            b.flush().await.map_err(|e| format!("flush: {e}"))?;
            Ok(Applied::Flushed)
        }
        Op::Read => Ok(Applied::Read),
        Op::Commit(g, pick) => {
            let group = GROUPS[g];
            let from = b
                .committed_offset(group)
                .await
                .map_err(|e| format!("committed offset of {group}: {e}"))?
                .map_or(0, |c| c.offset);
            let end = b.total_count();
            let offset = from + pick % (end.saturating_sub(from) + 1);
            b.commit_offset(group, offset)
                .await
                .map_err(|e| format!("commit {group} at {offset} (end {end}): {e}"))?;
            Ok(Applied::Committed(g, offset))
        }
        Op::Trim(pick) => {
            let start = b.log_start().await;
            let before = start + pick % (next.saturating_sub(start) + 1);
            let report = b
                .trim(before)
                .await
                .map_err(|e| format!("trim before {before} (log start {start}): {e}"))?;
            Ok(Applied::Trimmed(report.log_start))
        }
        // a bucket with nothing committed has no version to pin
        Op::Snapshot(_) if next == 0 => Ok(Applied::Read),
        Op::Snapshot(pick) => {
            let kept = b.snapshots().await.map_err(|e| format!("snapshots: {e}"))?;
            if kept.len() >= 2
                && let Some(oldest) = kept.iter().min_by_key(|s| s.version)
            {
                b.delete_snapshot(&oldest.name)
                    .await
                    .map_err(|e| format!("delete snapshot {}: {e}", oldest.name))?;
            }
            // a name a predecessor took and kept (a worker replayed by hand with the
            // same seed, round and count runs the same operations) gets a suffix, so
            // the replay takes a new snapshot instead of being refused one that exists
            let mut name = format!("s{next}-{}", pick % 1_000_000);
            while kept.iter().any(|s| s.name == name) {
                name.push('r');
            }
            let s = b
                .snapshot(&name)
                .await
                .map_err(|e| format!("snapshot {name}: {e}"))?;
            Ok(Applied::Snapshot(Pinned {
                name,
                start: s.log_start,
                end: s.end_offset,
            }))
        }
    }
}

//! The write path of a bucket, and its bound on what is not committed yet.
//!
//! Invariants:
//! - a batch is stored whole or not at all: it is admitted (schema checked), logged
//!   and buffered under the bucket's write lock, and nothing of a refused batch is
//!   logged or buffered, so a retry duplicates nothing;
//! - the encoded bytes of the records not committed yet ([`Ledger`]) stay at most
//!   `max_unflushed_bytes` plus one batch (a batch alone is always taken, or a batch
//!   bigger than the bound could never be), and the WAL at most `max_wal_size` plus
//!   one batch: a put finding no room waits for a commit to free some, for at most
//!   `put_timeout`, then fails with [`BucketError::StoreUnavailable`];
//! - a put never waits for a commit while holding the bucket, and never makes a flush
//!   itself: it wakes the flush owner (`flush`).

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use persisting_codec::{Record, encode_record, encoded_len};
use persisting_lance::LanceBucket;
use tokio::sync::RwLockWriteGuard;

use super::PersistingBackend;
use crate::error::{BucketError, NoRoom, Result};

/// The encoded bytes of a bucket's records not committed yet, by the batch that put
/// them (a commit takes whole batches: everything buffered when it starts).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// `(end offset, bytes)` of each batch not committed yet, oldest first.
    batches: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl Ledger {
    /// Counts a batch buffered up to offset `end`, of `bytes` encoded bytes.
    pub(super) fn add(&mut self, end: u64, bytes: u64) {
        if bytes > 0 {
            self.batches.push_back((end, bytes));
            self.bytes += bytes;
        }
    }

    /// Lets go of the batches below `persisted` (committed).
    pub(super) fn release(&mut self, persisted: u64) {
        while let Some(&(end, bytes)) = self.batches.front() {
            if end > persisted {
                break;
            }
            self.batches.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Encoded bytes not committed yet.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A batch ready to be logged: its WAL payloads (none without a WAL) and sizes.
struct Encoded {
    payloads: Vec<Vec<u8>>,
    /// Encoded (uncompressed) bytes of the records: what the bound counts.
    bytes: u64,
    /// Bytes the WAL takes for them (compressed payloads).
    logged_bytes: u64,
}

/// Which bound a put found reached.
struct Full {
    bound: &'static str,
    bound_bytes: u64,
    held_bytes: u64,
}

impl PersistingBackend {
    /// A put, top to bottom: encode → lock with room (waiting for it unlocked) →
    /// admit → WAL append → buffer → unlock → wait durable → publish → wake the flush
    /// owner when a flush is due. Five calls into Lance under the lock
    /// (`ensure_writer`, `admit`, `buffer`, `buffered_count`, `flush_due`; a sixth,
    /// `unflushed_count`, once half of `max_unflushed_bytes` waits).
    pub(super) async fn put_records(&self, records: Vec<Record>) -> Result<()> {
        self.check_open()?;
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len() as u64;
        let encoded = self.encode(&records)?;
        let mut lance = self.with_room(&encoded).await?;
        let admitted = lance.admit(records)?;
        let logged = self.log(&encoded.payloads, admitted.offsets().start)?;
        let offsets = lance.buffer(admitted)?;
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(offsets.end, encoded.bytes);
        let buffered = lance.buffered_count();
        let wal_bytes = self.wal_bytes();
        let flush_due = self.flush_due(&lance, wal_bytes);
        drop(lance);
        if let (Some(end), Some(wal)) = (logged, &self.inner.wal) {
            // concurrent puts share one fsync: the WAL's sync thread syncs for every
            // waiting task at once
            wal.durable(end).await?;
        }
        self.publish(offsets.end);
        if let Some(m) = &self.inner.metrics {
            m.put(count, buffered, wal_bytes);
        }
        if flush_due {
            // the batch is acknowledged, whatever the flush does: the owner commits
            // it in the background and retries a failure
            self.inner.flusher.wake();
        }
        Ok(())
    }

    /// The bucket, write-locked, once it has room for `batch` and this writer still
    /// holds its lease. Without room it waits, unlocked, for commits to free some, up
    /// to `put_timeout`.
    async fn with_room(&self, batch: &Encoded) -> Result<RwLockWriteGuard<'_, LanceBucket>> {
        let started = Instant::now();
        let deadline = started + self.inner.opts.put_timeout;
        loop {
            // subscribed before looking, so that a commit applied in between is seen
            let mut applied = self.inner.flusher.applied();
            let lance = self.inner.lance.write().await;
            // nothing is acknowledged once another writer took the bucket over
            lance.ensure_writer().await?;
            let Some(full) = self.full(batch) else {
                return Ok(lance);
            };
            drop(lance);
            let _waiting = self.inner.flusher.wait_for_room();
            let freed = tokio::time::timeout_at(deadline.into(), applied.changed()).await;
            if freed.is_err() {
                return Err(self.unavailable(batch, full, started.elapsed()).into());
            }
        }
    }

    /// Encoded bytes of the records not committed yet.
    pub(super) fn unflushed_bytes(&self) -> u64 {
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes()
    }

    /// The bound `batch` would pass, if any (the bucket locked).
    fn full(&self, batch: &Encoded) -> Option<Full> {
        let opts = &self.inner.opts;
        let held_bytes = self.unflushed_bytes();
        if held_bytes == 0 {
            // a batch alone is always taken
            return None;
        }
        if held_bytes + batch.bytes > opts.max_unflushed_bytes {
            return Some(Full {
                bound: "max_unflushed_bytes",
                bound_bytes: opts.max_unflushed_bytes,
                held_bytes,
            });
        }
        let wal_bytes = self.wal_bytes()?;
        (wal_bytes + batch.logged_bytes > opts.max_wal_size).then_some(Full {
            bound: "max_wal_size",
            bound_bytes: opts.max_wal_size,
            held_bytes: wal_bytes,
        })
    }

    /// The error of a put that found no room within `put_timeout`.
    fn unavailable(&self, batch: &Encoded, full: Full, waited: Duration) -> BucketError {
        let failing = self.inner.flusher.failing();
        BucketError::StoreUnavailable(Box::new(NoRoom {
            bucket_id: self.inner.bucket_id,
            uri: self.inner.storage_path.display().to_string(),
            batch_bytes: batch.bytes,
            held_bytes: full.held_bytes,
            bound: full.bound,
            bound_bytes: full.bound_bytes,
            waited,
            failing_for: failing.as_ref().map(|(_, d)| *d),
            last_error: failing.map(|(e, _)| e),
        }))
    }

    /// The WAL payloads of `records` (none without a WAL) and their sizes.
    fn encode(&self, records: &[Record]) -> Result<Encoded> {
        if self.inner.wal.is_none() {
            let bytes = records.iter().map(|r| encoded_len(r) as u64).sum();
            return Ok(Encoded {
                payloads: Vec::new(),
                bytes,
                logged_bytes: 0,
            });
        }
        let mut c = self
            .inner
            .compressor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut bytes, mut logged_bytes) = (0, 0);
        let payloads = records
            .iter()
            .map(|r| {
                let encoded = encode_record(r);
                bytes += encoded.len() as u64;
                let payload = c.compress(&encoded)?;
                logged_bytes += payload.len() as u64;
                Ok(payload)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoded {
            payloads,
            bytes,
            logged_bytes,
        })
    }

    /// Appends the payloads of a batch the bucket admitted at `start` to the WAL
    /// (without waiting for its fsync). Returns the offset the put must wait to be
    /// durable up to (under `wal_sync_interval = 0`), if any.
    fn log(&self, payloads: &[Vec<u8>], start: u64) -> Result<Option<u64>> {
        let Some(wal) = &self.inner.wal else {
            return Ok(None);
        };
        let range = wal.append_batch_deferred(payloads)?;
        if range.start != start {
            return Err(BucketError::OffsetMismatch {
                bucket_id: self.inner.bucket_id,
                wal_at: range.start,
                bucket_at: start,
            }
            .into());
        }
        Ok(self.inner.wait_durable.then_some(range.end))
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn the_ledger_lets_go_of_whole_batches_once_committed() {
        let mut l = Ledger::default();
        l.add(10, 100);
        l.add(15, 50);
        l.add(15, 0);
        l.release(9);
        assert_eq!(l.bytes(), 150, "a batch is let go only whole");
        l.release(10);
        assert_eq!(l.bytes(), 50);
        l.release(100);
        assert_eq!(l.bytes(), 0);
    }
}

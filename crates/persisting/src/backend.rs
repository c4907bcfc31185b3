//! The [`StorageBackend`] trait every backend implements, its statistics, and the
//! record stream shared by all of them.
//!
//! Invariant of every backend: `get` and `get_stream` return only acknowledged records
//! (a record whose `put` has not returned is never visible), in offset order, each
//! offset once.

use std::collections::VecDeque;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, StreamExt};
use persisting_codec::Record;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::Result;
use crate::groups::{BucketGroups, GroupLag};
use persisting_lance::GroupOffset;

/// Statistics of a backend, serializable to the seed's dictionary keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackendStats {
    /// The bucket.
    pub bucket_id: u64,
    /// Records stored (buffer + persisted).
    pub total_count: u64,
    /// Records in the in-memory buffer.
    pub buffer_count: u64,
    /// Records in Lance.
    pub persisted_count: u64,
    /// The first offset the bucket holds: records below it were trimmed (0 until
    /// a trim). `total_count` stays the end offset (the next record's).
    pub log_start_offset: u64,
    /// Where the bucket lives.
    pub storage_path: String,
    /// Whether puts go through a WAL first.
    pub wal_enabled: bool,
    /// WAL size on disk, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_size_bytes: Option<u64>,
    /// WAL segment files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_segments: Option<usize>,
    /// WAL fsyncs since open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync_count: Option<u64>,
    /// WAL fsync interval in seconds (0: before each put returns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_sync_interval: Option<f64>,
    /// Compression of WAL payloads (`none`, `zstd`, `lz4`, `snappy`).
    pub compression: String,
    /// Compression of Lance columns (snappy has none: it applies to the WAL only).
    pub column_compression: String,
    /// Flushes since open.
    pub flush_count: u64,
    /// Duration of the last flush, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_flush_duration_seconds: Option<f64>,
    /// Encoded bytes of the records not committed to Lance yet (bounded by
    /// `max_unflushed_bytes`).
    pub unflushed_bytes: u64,
    /// The error of the last flush, while flushes fail (cleared by one that goes
    /// through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_flush_error: Option<String>,
    /// Seconds since flushes began to fail (the first failure since the last flush
    /// that went through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_failing_seconds: Option<f64>,
    /// Whether the figures from the Lance layer (buffer, persisted, flushes) are those
    /// of the last look before a flush that is still running took the bucket: stats
    /// answer at once rather than wait for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// A pluggable storage backend of one queue bucket (the seed's `StorageBackend`
/// protocol). Object-safe: a registry holds `Arc<dyn StorageBackend>`.
pub trait StorageBackend: Send + Sync {
    /// Stores one record; returns once it is acknowledged (see the durability table in
    /// the crate documentation).
    fn put(&self, record: Record) -> BoxFuture<'_, Result<()>> {
        self.put_batch(vec![record])
    }

    /// Stores records as one unit: all are acknowledged, or none is stored.
    fn put_batch(&self, records: Vec<Record>) -> BoxFuture<'_, Result<()>>;

    /// Records `[offset, offset + limit)` clipped to what exists (`None`: to the end).
    fn get(&self, offset: u64, limit: Option<usize>) -> BoxFuture<'_, Result<Vec<Record>>>;

    /// Records from `offset`, one at a time, at most `limit`. With `block`, waits for
    /// new records instead of ending (no polling), until the backend is closed.
    fn get_stream(
        &self,
        offset: u64,
        limit: Option<usize>,
        block: bool,
    ) -> BoxStream<'_, Result<Record>> {
        record_stream(self, offset, limit, block, self.read_batch_size())
    }

    /// Persists buffered records to storage.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;

    /// Statistics.
    fn stats(&self) -> BoxFuture<'_, Result<BackendStats>>;

    /// Records stored, acknowledged ones (cheap, synchronous).
    fn total_count(&self) -> u64;

    /// A receiver of the acknowledged record count; it closes when the backend does.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Flushes and closes: blocked streams end, later calls fail.
    fn close(&self) -> BoxFuture<'_, Result<()>>;

    /// The bucket's consumer groups (see [`crate::groups`]). The default: not
    /// supported (a `MemoryBackend`'s records do not outlive the process, so neither
    /// would its offsets).
    fn consumer_groups(&self) -> Result<BucketGroups> {
        Err(crate::error::BucketError::Unsupported {
            backend: std::any::type_name::<Self>(),
            operation: "consumer groups",
        }
        .into())
    }

    /// Commits `group`'s offset, durably (see [`BucketGroups::commit`]).
    fn commit_offset<'a>(
        &'a self,
        group: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<GroupOffset>> {
        let groups = self.consumer_groups();
        async move { groups?.commit(group, offset).await }.boxed()
    }

    /// Commits `group`'s offset if no one changed it since it was read as `seen` (see
    /// [`BucketGroups::commit_from`]).
    fn commit_offset_from<'a>(
        &'a self,
        group: &'a str,
        seen: Option<GroupOffset>,
        offset: u64,
    ) -> BoxFuture<'a, Result<GroupOffset>> {
        let groups = self.consumer_groups();
        async move { groups?.commit_from(group, seen.as_ref(), offset).await }.boxed()
    }

    /// `group`'s committed offset (`None`: it never committed).
    fn committed_offset<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<GroupOffset>>> {
        let groups = self.consumer_groups();
        async move { groups?.committed(group).await }.boxed()
    }

    /// Moves `group` to `offset`, back or forward, within the bucket.
    fn seek_group<'a>(&'a self, group: &'a str, offset: u64) -> BoxFuture<'a, Result<GroupOffset>> {
        let groups = self.consumer_groups();
        async move { groups?.seek(group, offset).await }.boxed()
    }

    /// Deletes `group`; whether it had a committed offset.
    fn delete_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<bool>> {
        let groups = self.consumer_groups();
        async move { groups?.delete(group).await }.boxed()
    }

    /// Every group of the bucket with its committed offset, the end and the lag.
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<GroupLag>>> {
        let groups = self.consumer_groups();
        async move { groups?.list().await }.boxed()
    }

    /// Records fetched per read by [`StorageBackend::get_stream`].
    fn read_batch_size(&self) -> usize {
        100
    }

    /// The stored bucket behind this backend, for what only stored data has: trims,
    /// retention and snapshots ([`crate::PersistingBackend::trim`], ...). The
    /// default: not supported (a `MemoryBackend` keeps nothing to trim or pin).
    fn stored(&self) -> Result<&crate::PersistingBackend> {
        Err(crate::error::BucketError::Unsupported {
            backend: std::any::type_name::<Self>(),
            operation: "trims and snapshots",
        }
        .into())
    }
}

struct StreamState<'a, B: ?Sized> {
    backend: &'a B,
    offset: u64,
    remaining: Option<usize>,
    buf: VecDeque<Record>,
    rx: watch::Receiver<u64>,
    block: bool,
    done: bool,
    chunk: usize,
}

/// The record stream of [`StorageBackend::get_stream`]: reads in chunks, and when
/// caught up either ends or waits on the count channel.
pub fn record_stream<B: StorageBackend + ?Sized>(
    backend: &B,
    offset: u64,
    limit: Option<usize>,
    block: bool,
    chunk: usize,
) -> BoxStream<'_, Result<Record>> {
    let state = StreamState {
        backend,
        offset,
        remaining: limit,
        buf: VecDeque::new(),
        rx: backend.subscribe(),
        block,
        done: false,
        chunk: chunk.max(1),
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if s.done || s.remaining == Some(0) {
                return None;
            }
            if let Some(record) = s.buf.pop_front() {
                s.offset += 1;
                if let Some(r) = s.remaining.as_mut() {
                    *r -= 1;
                }
                return Some((Ok(record), s));
            }
            let want = s.remaining.unwrap_or(usize::MAX).min(s.chunk);
            match s.backend.get(s.offset, Some(want)).await {
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Ok(records) if !records.is_empty() => s.buf.extend(records),
                Ok(_) if !s.block => return None,
                Ok(_) => {
                    let offset = s.offset;
                    if s.rx.wait_for(|count| *count > offset).await.is_err() {
                        return None; // closed
                    }
                }
            }
        }
    })
    .boxed()
}

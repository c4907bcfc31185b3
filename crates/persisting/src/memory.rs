//! [`MemoryBackend`]: records in memory only, for tests and as a queue's default.

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use persisting_codec::Record;
use tokio::sync::watch;

use crate::backend::{BackendStats, StorageBackend};
use crate::error::{BucketError, Result};

/// A backend that keeps records in memory (nothing survives the process).
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bucket_id: u64,
    records: Mutex<Vec<Record>>,
    count: Mutex<Option<watch::Sender<u64>>>,
}

impl MemoryBackend {
    /// An empty in-memory bucket.
    pub fn new(bucket_id: u64) -> Self {
        let (tx, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                bucket_id,
                records: Mutex::new(Vec::new()),
                count: Mutex::new(Some(tx)),
            }),
        }
    }
}

impl StorageBackend for MemoryBackend {
    fn put_batch(&self, records: Vec<Record>) -> BoxFuture<'_, Result<()>> {
        async move {
            let guard = self
                .inner
                .count
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = guard.as_ref() else {
                return Err(BucketError::Closed {
                    bucket_id: self.inner.bucket_id,
                }
                .into());
            };
            let mut all = self
                .inner
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            all.extend(records);
            tx.send_replace(all.len() as u64);
            Ok(())
        }
        .boxed()
    }

    fn get(&self, offset: u64, limit: Option<usize>) -> BoxFuture<'_, Result<Vec<Record>>> {
        async move {
            let all = self
                .inner
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let start = (offset as usize).min(all.len());
            let end = start
                .saturating_add(limit.unwrap_or(usize::MAX))
                .min(all.len());
            Ok(all[start..end].to_vec())
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        async { Ok(()) }.boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats>> {
        async move {
            let n = self.total_count();
            Ok(BackendStats {
                bucket_id: self.inner.bucket_id,
                total_count: n,
                buffer_count: n,
                storage_path: ":memory:".to_owned(),
                compression: "none".to_owned(),
                column_compression: "none".to_owned(),
                ..BackendStats::default()
            })
        }
        .boxed()
    }

    fn total_count(&self) -> u64 {
        self.inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let guard = self
            .inner
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.subscribe(),
            None => watch::channel(self.total_count()).1,
        }
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.inner
                .count
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            Ok(())
        }
        .boxed()
    }
}

//! The group-commit leader of a bucket whose puts wait for durability
//! (`wal_sync_interval = 0`).
//!
//! One thread per bucket makes the WAL durable up to what puts are waiting for: it
//! syncs, publishes the WAL's new durable LSN on a watch channel, and syncs again while
//! puts still wait. Each sync covers every entry appended before it began, so
//! concurrent puts share one fsync, and there is no fixed delay. The waiting puts are
//! tasks woken by the channel: they hold no runtime thread and need no thread of their
//! own while they wait.
//!
//! Invariants:
//! - a published LSN is one the WAL reported durable after a sync that succeeded, so a
//!   put whose entries end at or below it is acknowledged truthfully;
//! - a failed sync is published as a failure (the WAL is then poisoned and fails every
//!   later call); the waiters ask the WAL for its error and return it;
//! - dropping the syncer stops and joins its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use persisting_wal::Wal;
use tokio::sync::watch;

use crate::error::{Result, StorageError};

/// What the syncer last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    lsn: u64,
    failed: bool,
}

/// See the module documentation.
pub(crate) struct Syncer {
    wal: Arc<Wal>,
    wanted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    durable: watch::Receiver<Durable>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Syncer({:?})", *self.durable.borrow())
    }
}

impl Syncer {
    /// Starts the thread for `wal` (named after the bucket).
    pub(crate) fn start(wal: Arc<Wal>, bucket_id: u64) -> Result<Self> {
        let start = wal.durable_lsn();
        let (tx, rx) = watch::channel(Durable {
            lsn: start,
            failed: false,
        });
        let wanted = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("persisting-sync-{bucket_id}"))
            .spawn({
                let (wal, wanted, stop) = (wal.clone(), wanted.clone(), stop.clone());
                move || run(&wal, &wanted, &stop, &tx)
            })
            .map_err(|e| StorageError::Task(format!("cannot start the WAL sync thread: {e}")))?;
        Ok(Self {
            wal,
            wanted,
            stop,
            durable: rx,
            thread: Some(thread),
        })
    }

    /// Returns once every WAL entry below `end` is durable.
    pub(crate) async fn wait(&self, end: u64) -> Result<()> {
        if self.durable.borrow().lsn >= end {
            return Ok(());
        }
        self.wanted.fetch_max(end, Ordering::AcqRel);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        let mut rx = self.durable.clone();
        let seen = rx
            .wait_for(|d| d.lsn >= end || d.failed)
            .await
            .map(|d| *d)
            .map_err(|_| StorageError::Task("the WAL sync thread stopped".to_owned()))?;
        if seen.lsn >= end {
            return Ok(());
        }
        // the sync failed: the poisoned WAL says why
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.wait_durable(end))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))??;
        Ok(())
    }
}

fn run(wal: &Wal, wanted: &AtomicU64, stop: &AtomicBool, tx: &watch::Sender<Durable>) {
    let mut published = tx.borrow().lsn;
    loop {
        if wanted.load(Ordering::Acquire) > published {
            match wal.sync() {
                Ok(()) => {
                    published = wal.durable_lsn();
                    tx.send_replace(Durable {
                        lsn: published,
                        failed: false,
                    });
                }
                Err(_) => {
                    tx.send_replace(Durable {
                        lsn: published,
                        failed: true,
                    });
                    return;
                }
            }
            continue;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        // a put that raises `wanted` after the check above unparks this thread, and an
        // unpark that comes before the park makes the park return at once
        std::thread::park();
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

//! Opening a bucket: its lock, its writer's name for a lease, the Lance bucket, and the
//! recovery of what the WAL holds beyond Lance.
//!
//! Invariants:
//! - one handle writes a bucket: its local directory's `LOCK` is held (flock) from
//!   before anything is read until `close` or the last clone's drop;
//! - recovery replays the WAL entries at or above Lance's count with their offsets,
//!   after any commit a dropped handle left running has landed, so nothing
//!   acknowledged is lost and nothing is counted twice;
//! - data at a URI is written only under this writer's lease, taken before the replay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock as SyncRwLock, Weak};
use std::time::Duration;

use persisting_codec::decode_record;
use persisting_compress::{Compressor, UNCOMPRESSED_BYTES_MAX_DEFAULT, decompress};
use persisting_lance::{Disk, LanceBucket, Location, RealDisk};
use persisting_wal::{Fs, RealFs, SyncPolicy, Wal, WalOptions};
use tokio::sync::{RwLock, watch};

use super::flush::Flusher;
use super::put::Ledger;
use super::{Inner, PersistingBackend, blocking};
use crate::error::{BucketError, Result, StorageError};
use crate::layout::{LOCK_FILE, WAL_DIR, WRITER_FILE};
use crate::metrics::BucketMetrics;
use crate::options::PersistingOptions;

/// Attempts, 20 ms apart, to take a bucket's lock before reporting it held.
const LOCK_RETRIES: u32 = 25;

/// The bucket's local directory, holding its lock file and WAL: `wal_dir` if set,
/// else the storage path. Data at a URI (`s3://…`) has no local directory of its own:
/// `wal_dir` is required then.
fn local_dir(location: &Location, opts: &PersistingOptions) -> Result<PathBuf> {
    if let Some(dir) = &opts.wal_dir {
        return Ok(dir.clone());
    }
    match location {
        Location::Local(dir) => Ok(dir.clone()),
        Location::Remote(uri) => Err(StorageError::invalid(
            "wal_dir",
            "(unset)",
            format!(
                "is required when the data is at a URI ({uri}): the WAL and the lock file need a local directory"
            ),
        )),
    }
}

/// For data at a URI: the name this bucket's writer holds the lease under, kept in
/// `{local_dir}/WRITER` (created at the first open). The same local directory (the
/// same WAL, under the lock this handle holds) is the same writer: restarted, it
/// takes its lease back at once instead of waiting for it to expire.
fn writer_id(location: &Location, local_dir: &Path) -> Result<Option<String>> {
    if !location.is_remote() {
        return Ok(None);
    }
    let path = local_dir.join(WRITER_FILE);
    let failed = |e: std::io::Error| BucketError::Lock {
        path: local_dir.to_path_buf(),
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(Some(id.trim().to_owned())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e).into()),
    }
    let id = persisting_lance::writer_name();
    let tmp = local_dir.join(format!("{WRITER_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).map_err(failed)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(failed)?;
    std::fs::File::open(local_dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(Some(id))
}

/// Takes the bucket's exclusive lock (released when the file is closed, also when the
/// process dies), so two writers never interleave a bucket's offsets or WAL.
fn lock_bucket(storage_path: &Path) -> Result<std::fs::File> {
    let failed = |source| BucketError::Lock {
        path: storage_path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(storage_path).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(storage_path.join(LOCK_FILE))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BucketError::Locked {
            path: storage_path.to_path_buf(),
        }
        .into()),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e).into()),
    }
}

/// Buckets opened in this process, by local directory (see [`wait_for_release`]).
static HELD: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = LazyLock::new(Default::default);

/// Records that `inner` holds the lock of the bucket in `local_dir`.
fn held_here(local_dir: &Path, inner: &Arc<Inner>) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    held.retain(|_, w| w.strong_count() > 0);
    held.insert(local_dir.to_path_buf(), Arc::downgrade(inner));
}

/// Longest an open waits for a handle of this process that its users have dropped to
/// let go of the bucket's lock (its flush owner finishing a step, such as a commit's
/// start or a compaction).
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// When the lock of the bucket in `local_dir` is held by a handle of this process
/// that has no user left (all its handles dropped, without `close`), waits until it
/// lets go; returns whether it waited. A handle still in use is left alone: the
/// caller reports the bucket as in use.
async fn wait_for_release(local_dir: &Path) -> bool {
    let holder = HELD
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(local_dir)
        .cloned();
    let Some(holder) = holder else {
        return false;
    };
    let dying = holder
        .upgrade()
        .is_some_and(|inner| inner.users.load(Ordering::Acquire) == 0);
    if !dying {
        return false;
    }
    let started = std::time::Instant::now();
    while holder.strong_count() > 0 && started.elapsed() < RELEASE_WAIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

impl PersistingBackend {
    /// Opens (and recovers) the bucket stored under `storage_path`.
    pub async fn open(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
    ) -> Result<Self> {
        Self::open_with_wal_fs(bucket_id, storage_path, opts, Arc::new(RealFs)).await
    }

    /// Opens the bucket with its WAL on any [`Fs`] (the WAL crate's simulated file
    /// system in tests; Lance stays on the real disk).
    pub async fn open_with_wal_fs(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
        wal_fs: Arc<dyn Fs>,
    ) -> Result<Self> {
        let open = Self::open_with_disks(bucket_id, storage_path, opts, wal_fs, Arc::new(RealDisk));
        Box::pin(open).await
    }

    /// Opens the bucket with its WAL on `wal_fs` and its Lance files on `lance_disk`:
    /// with the simulated ones ([`crate::wal::SimFs`], [`crate::lance::SimDisk`]) a
    /// test cuts the power of the whole bucket.
    pub async fn open_with_disks(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
        wal_fs: Arc<dyn Fs>,
        lance_disk: Arc<dyn Disk>,
    ) -> Result<Self> {
        // options built in Rust meet the bounds the map's parse holds them to
        opts.validate()?;
        // where the data is, decided once
        let location = Location::of(storage_path)?;
        let storage_path = location.to_path_buf();
        let local_dir = local_dir(&location, &opts)?;
        // a lock can be held for a moment by a handle being dropped elsewhere, or by a
        // process being spawned (it shares the descriptor until it execs): retry
        // briefly before reporting the bucket as in use
        let mut tries = 0;
        let lock = loop {
            match lock_bucket(&local_dir) {
                Err(StorageError::Bucket(BucketError::Locked { .. })) if tries < LOCK_RETRIES => {
                    if !wait_for_release(&local_dir).await {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                other => break other?,
            }
        };
        let lance_opts = opts.lance_options(writer_id(&location, &local_dir)?);
        // a flush commit left running by a dropped handle lands before this open counts
        // the rows (LanceBucket::open waits for it): the WAL is replayed after it
        let groups = persisting_lance::Groups::open_on(
            &storage_path,
            &lance_opts.storage_options,
            Arc::clone(&lance_disk),
        )
        .await?;
        let mut lance =
            Box::pin(LanceBucket::open_on(&storage_path, lance_opts, lance_disk)).await?;
        // data at a URI: the writer's lease, before anything is replayed or written
        lance.ensure_writer().await?;
        let mut ledger = Ledger::default();
        let wal = if opts.enable_wal {
            let (wal, replayed_bytes) =
                open_wal(bucket_id, &local_dir, &opts, &mut lance, wal_fs).await?;
            ledger.add(lance.total_count(), replayed_bytes);
            Some(Arc::new(wal))
        } else {
            None
        };
        let wait_durable = wal
            .as_ref()
            .is_some_and(|w| w.options().sync == SyncPolicy::Always);
        let compressor = Compressor::new(opts.compression)?;
        let count = lance.total_count();
        let metrics = opts
            .enable_metrics
            .then(|| BucketMetrics::new(&opts.metrics_topic, bucket_id));
        if let Some(m) = &metrics {
            m.put(
                0,
                lance.buffered_count(),
                wal.as_ref().map(|w| w.stats().total_bytes),
            );
        }
        let (notify, _) = watch::channel(count);
        let flush_ends = lance.flush_ends();
        let persisted = lance.persisted_count();
        let inner = Arc::new(Inner {
            bucket_id,
            storage_path,
            opts,
            lance: RwLock::new(lance),
            wal,
            wait_durable,
            compressor: Mutex::new(compressor),
            visible: AtomicU64::new(count),
            notify: SyncRwLock::new(Some(notify)),
            closed: AtomicBool::new(false),
            metrics,
            groups,
            flusher: Flusher::new(persisted),
            ledger: Mutex::new(ledger),
            last_stats: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            users: AtomicUsize::new(0),
        });
        held_here(&local_dir, &inner);
        let backend = Self::user(inner);
        backend.own_flushes(flush_ends);
        Ok(backend)
    }
}

/// Opens the WAL of a bucket and replays what Lance lacks into the bucket's buffer.
/// Returns the WAL and the encoded bytes of the records replayed.
async fn open_wal(
    bucket_id: u64,
    local_dir: &Path,
    opts: &PersistingOptions,
    lance: &mut LanceBucket,
    fs: Arc<dyn Fs>,
) -> Result<(Wal, u64)> {
    let persisted = lance.persisted_count();
    let dir = local_dir.join(WAL_DIR);
    let sync = if opts.wal_sync_interval.is_zero() {
        SyncPolicy::Always
    } else {
        SyncPolicy::Interval(opts.wal_sync_interval)
    };
    let wal_opts = WalOptions {
        sync,
        start_lsn: persisted,
        segment_bytes_max: (opts.max_wal_size / 4).clamp(4096, 64 << 20),
        on_fsync: opts
            .enable_metrics
            .then(|| BucketMetrics::fsync_observer(&opts.metrics_topic, bucket_id)),
        ..WalOptions::default()
    };
    let wal_dir = dir.clone();
    let (wal, entries) = blocking("open and replay the WAL", move || {
        let (wal, _report) = Wal::open_with(fs, &wal_dir, wal_opts)?;
        if wal.next_lsn() < persisted {
            // Lance holds records whose WAL entries were lost unsynced: nothing to replay
            wal.checkpoint(persisted)?;
        }
        if wal.first_lsn() > persisted {
            return Err(BucketError::WalGap {
                wal_dir,
                persisted,
                wal_first: wal.first_lsn(),
            }
            .into());
        }
        let mut entries = Vec::new();
        for entry in wal.read_from(persisted)? {
            entries.push(entry?.payload);
        }
        Ok((wal, entries))
    })
    .await?;
    let mut records = Vec::with_capacity(entries.len());
    let mut replayed_bytes = 0;
    for frame in entries {
        let bytes = decompress(&frame, UNCOMPRESSED_BYTES_MAX_DEFAULT)?;
        replayed_bytes += bytes.len() as u64;
        records.push(decode_record(&bytes)?);
    }
    lance.put_batch(records)?;
    Ok((wal, replayed_bytes))
}

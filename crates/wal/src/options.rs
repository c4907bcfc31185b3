//! Options chosen when a WAL is opened, checked before anything touches the disk.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::{ENTRY_HEADER_BYTES, FRAME_HEADER_BYTES};

/// When appended entries are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// An append returns only once its entry is fsynced. Concurrent appenders share
    /// one fsync (group commit: the first waiter syncs for everyone written so far).
    Always,
    /// Appends return once written to the file (a process crash loses nothing); a
    /// background thread fsyncs at this interval (a power loss loses at most the last
    /// interval).
    Interval(Duration),
    /// Never fsync except when a segment is closed and when the WAL is closed.
    Os,
}

/// Called after every fsync of segment data with how long the write and fsync took
/// (for metrics; it runs on the syncing thread, so it must be quick).
#[derive(Clone)]
pub struct FsyncObserver(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl FsyncObserver {
    /// Wraps a callback.
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncObserver(..)")
    }
}

impl PartialEq for FsyncObserver {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FsyncObserver {}

/// What recovery does with damage other than a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// A torn tail (a partial or zeroed last frame, with no valid frame after it) is
    /// cut off; any other damage makes `open` fail with [`Error::Corrupted`] naming the
    /// segment, the offset and the checksums.
    #[default]
    Strict,
    /// Keep the longest valid prefix of the log: cut the damaged segment at the first
    /// bad frame and set later segments aside as `*.wal.corrupt` files (never deleted),
    /// reporting what was set aside in the [`crate::RecoveryReport`].
    Salvage,
}

/// Who closes a full segment (fsyncs it, then gives the next one its final name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentClose {
    /// A background thread: appends never wait for a segment to be closed; only
    /// durability waits (`sync`, appends under [`SyncPolicy::Always`]) do.
    #[default]
    Background,
    /// The append that fills a segment closes it before returning. Every state is then
    /// a function of the calls made, which deterministic simulation tests need.
    Inline,
}

/// Options of a WAL. Every limit is in bytes and checked by [`WalOptions::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Durability of appends (default [`SyncPolicy::Always`]).
    pub sync: SyncPolicy,
    /// A segment is closed and a new one started once the next frame would take it
    /// past this size (default 64 MiB; at least 4 KiB).
    pub segment_bytes_max: u64,
    /// Largest single entry (default 16 MiB).
    pub entry_bytes_max: u64,
    /// Largest frame, which bounds a batch (default 256 MiB; at most 4 GiB − 1).
    pub frame_bytes_max: u64,
    /// Recovery behaviour at open (default [`RecoveryMode::Strict`]).
    pub recovery: RecoveryMode,
    /// LSN of the first entry when the directory holds no log yet (default 0).
    pub start_lsn: u64,
    /// Who closes full segments (default [`SegmentClose::Background`]).
    pub segment_close: SegmentClose,
    /// Told the duration of every data fsync (default none).
    pub on_fsync: Option<FsyncObserver>,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::Always,
            segment_bytes_max: 64 << 20,
            entry_bytes_max: 16 << 20,
            frame_bytes_max: 256 << 20,
            recovery: RecoveryMode::Strict,
            start_lsn: 0,
            segment_close: SegmentClose::Background,
            on_fsync: None,
        }
    }
}

/// Smallest accepted `segment_bytes_max`.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

impl WalOptions {
    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name: &'static str, value: String, reason: &str| Error::InvalidOption {
            name,
            value,
            reason: reason.to_owned(),
        };
        if self.segment_bytes_max < SEGMENT_BYTES_MIN {
            return Err(invalid(
                "segment_bytes_max",
                self.segment_bytes_max.to_string(),
                "must be at least 4096 bytes",
            ));
        }
        let frame_limit = u64::from(u32::MAX);
        if self.frame_bytes_max > frame_limit
            || self.frame_bytes_max < (FRAME_HEADER_BYTES + ENTRY_HEADER_BYTES) as u64 + 1
        {
            return Err(invalid(
                "frame_bytes_max",
                self.frame_bytes_max.to_string(),
                "must be between 25 bytes and 4 GiB - 1",
            ));
        }
        if self.entry_bytes_max == 0
            || self.entry_bytes_max + ((FRAME_HEADER_BYTES + ENTRY_HEADER_BYTES) as u64)
                > self.frame_bytes_max
        {
            return Err(invalid(
                "entry_bytes_max",
                self.entry_bytes_max.to_string(),
                "must be at least 1 and leave room for one frame header within frame_bytes_max",
            ));
        }
        if let SyncPolicy::Interval(d) = self.sync
            && d.is_zero()
        {
            return Err(invalid(
                "sync",
                format!("{d:?}"),
                "an interval must be longer than zero (use SyncPolicy::Always to fsync every append)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        WalOptions::default().validate().unwrap();
        let cases = [
            (
                WalOptions {
                    segment_bytes_max: 100,
                    ..Default::default()
                },
                "segment_bytes_max",
            ),
            (
                WalOptions {
                    entry_bytes_max: 0,
                    ..Default::default()
                },
                "entry_bytes_max",
            ),
            (
                WalOptions {
                    frame_bytes_max: 1 << 40,
                    ..Default::default()
                },
                "frame_bytes_max",
            ),
            (
                WalOptions {
                    sync: SyncPolicy::Interval(Duration::ZERO),
                    ..Default::default()
                },
                "sync",
            ),
        ];
        for (opts, name) in cases {
            match opts.validate() {
                Err(Error::InvalidOption { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

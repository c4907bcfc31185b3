//! A segmented, checksummed write-ahead log of byte payloads.
//!
//! Entries get dense `u64` sequence numbers (LSNs) that continue across segment
//! rotation, checkpoints and restarts. Appends are single entries or atomic batches;
//! durability is chosen at open ([`SyncPolicy`]): fsync before returning with group
//! commit, fsync at an interval, or leave it to the OS; writers that are tasks of an
//! async runtime wait as futures ([`Wal::append_async`], [`Wal::durable`]) that hold no
//! thread and share fsyncs the same way. Recovery at open verifies every
//! frame, cuts a torn tail and reports anything else as corruption naming the file,
//! offset and checksums ([`RecoveryMode`]). The format is specified in
//! `docs/wal-format.md`.
//!
//! ```
//! use persisting_wal::{SyncPolicy, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = WalOptions { sync: SyncPolicy::Always, ..WalOptions::default() };
//! let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
//! let lsns = wal.append_batch(&[&b"put a"[..], b"put b", b"put c"]).unwrap();
//! assert_eq!(lsns, 0..3);
//! wal.checkpoint(2).unwrap(); // entries below 2 are stored elsewhere now
//! drop(wal);
//!
//! let (wal, report) = Wal::open(dir.path(), opts).unwrap();
//! assert_eq!(wal.next_lsn(), 3);
//! assert!(report.torn_tail.is_none());
//! let last = wal.read_from(2).unwrap().next().unwrap().unwrap();
//! assert_eq!((last.lsn, last.payload), (2, b"put c".to_vec()));
//! ```
//!
//! The crate knows nothing of what the payloads mean: it depends on no record codec,
//! compression or storage engine. All I/O goes through [`Fs`]; [`SimFs`] is a simulated
//! file system that loses unsynced data on a simulated crash, for tests.
#![deny(missing_docs)]

mod error;
mod frame;
mod fs;
mod inspect;
mod options;
mod reader;
mod recovery;
mod segment;
mod sim;
mod writer;

pub use error::{Corruption, Error, Result};
pub use frame::{ENTRY_HEADER_BYTES, FRAME_HEADER_BYTES};
pub use fs::{Fs, FsFile, RealFs};
pub use inspect::{Inspection, SegmentInfo, SegmentStatus, inspect, inspect_with};
pub use options::{
    FsyncObserver, RecoveryMode, SEGMENT_BYTES_MIN, SegmentClose, SyncPolicy, WalOptions,
};
pub use reader::{Entry, WalReader};
pub use recovery::{RecoveryReport, Salvaged, TornTail};
pub use segment::{
    FLAG_CHECKPOINT_BASE, PENDING_SUFFIX, QUARANTINE_SUFFIX, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
    SEGMENT_VERSION, SegmentHeader, parse_pending_name, parse_segment_name, pending_name,
    segment_name,
};
pub use sim::{CrashMode, SimFs, SimRng};
pub use writer::tasks::{AppendDurable, WaitDurable};
pub use writer::{PREALLOCATE_BYTES_MAX, Wal, WalStats};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! Errors of the WAL. Every variant names what a person needs to act: the file, the
//! byte offset, the LSNs, the expected and found checksum, the option and its value.

use std::path::PathBuf;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("WAL I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What was being done (`append to`, `fsync`, `create`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The log on disk is damaged somewhere other than a torn tail.
    #[error("WAL segment {segment} is corrupted at byte {offset}: {detail}")]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in that file.
        offset: u64,
        /// What is wrong.
        detail: Corruption,
    },
    /// An earlier fsync failed; the WAL refuses all writes until it is reopened, because
    /// a retried fsync can report success without the data being durable.
    #[error("WAL is poisoned by an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the WAL.
        cause: String,
    },
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// An entry larger than `entry_bytes_max`.
    #[error("entry of {len} bytes exceeds entry_bytes_max ({max} bytes)")]
    EntryTooLarge {
        /// The entry's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A batch whose frame would exceed `frame_bytes_max`.
    #[error(
        "batch of {entries} entries needs a {bytes}-byte frame, over frame_bytes_max ({max} bytes)"
    )]
    BatchTooLarge {
        /// Entries in the batch.
        entries: usize,
        /// Bytes the frame would take.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// An option with a value it cannot take.
    #[error("invalid WAL option {name} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// A read from an LSN the log does not hold.
    #[error("LSN {requested} is not in the WAL, which holds LSNs {first} to {next} (exclusive)")]
    LsnOutOfRange {
        /// LSN asked for.
        requested: u64,
        /// Oldest LSN held.
        first: u64,
        /// Next LSN to be written.
        next: u64,
    },
}

/// What is wrong with a corrupted segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A frame's checksum does not match its content.
    #[error("checksum mismatch (stored {expected:#010x}, computed {found:#010x})")]
    ChecksumMismatch {
        /// Checksum stored in the frame header.
        expected: u32,
        /// Checksum computed over the bytes read.
        found: u32,
    },
    /// A frame header that cannot be right (zero entries, a length over the limit, a
    /// body that does not parse into its entries).
    #[error("impossible frame header: {0}")]
    BadFrame(String),
    /// A frame that runs past the end of a segment that is not the last one.
    #[error("frame of {needed} bytes runs past the end of the segment ({available} bytes left)")]
    Truncated {
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A frame whose LSN does not continue the sequence.
    #[error("frame holds LSN {found} where LSN {expected} was expected")]
    LsnMismatch {
        /// LSN the sequence continues with.
        expected: u64,
        /// LSN in the frame.
        found: u64,
    },
    /// A gap between segments: LSNs that should exist are missing.
    #[error("LSNs {expected} to {found} (exclusive) are missing before this segment")]
    MissingLsns {
        /// First missing LSN.
        expected: u64,
        /// First LSN present after the gap.
        found: u64,
    },
    /// A segment header that is not a valid header of a known version.
    #[error("bad segment header: {0}")]
    BadHeader(String),
    /// The log ends, after a torn tail, with valid frames that follow corrupt bytes.
    #[error("{first}, and a valid frame follows at byte {next_valid}, so this is not a torn tail")]
    CorruptBeforeValid {
        /// Offset of the valid frame found after the corruption.
        next_valid: u64,
        /// The corruption itself.
        first: Box<Corruption>,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

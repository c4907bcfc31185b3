//! Errors of the Lance layer.

use std::path::PathBuf;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of the Lance record store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value whose type cannot live in its field's column. Nothing of the batch that
    /// held it was buffered.
    #[error(
        "schema conflict on field {field:?}: the column holds {existing}, the record has {found}"
    )]
    SchemaConflict {
        /// The field.
        field: String,
        /// The column's type.
        existing: String,
        /// The value's type.
        found: String,
    },
    /// An option with a value it cannot take.
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// Lance refused or failed an operation. (The message leaves out the source
    /// location Lance appends to its own.)
    #[error("Lance failed to {op} the dataset at {path}: {}", without_location(&.source.to_string()))]
    Lance {
        /// What was being done.
        op: &'static str,
        /// The dataset.
        path: String,
        /// Lance's error.
        #[source]
        source: lance::Error,
    },
    /// Arrow failed to build or convert a batch.
    #[error("Arrow failed to {op}: {source}")]
    Arrow {
        /// What was being done.
        op: &'static str,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A file-system operation failed (fsync of the dataset's files, for instance).
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A request to an object store failed (the lease, a consumer group's objects, a
    /// listing): the store's own error kept, e.g. to tell a timeout or a refused
    /// connection from a precondition.
    #[error("the object store failed to {op} {uri}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// What it was done to.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Stored bytes that do not decode: a damaged value or layout column.
    #[error("column {column:?} at offset {offset} does not decode: {source}")]
    Corrupt {
        /// The column.
        column: String,
        /// Record offset.
        offset: u64,
        /// The decoder's error.
        #[source]
        source: persisting_codec::Error,
    },
    /// A data file whose size or CRC-32 differs from the seal recorded when it was
    /// written (`data.lance.sums`): the file is damaged, and Lance was not let read it.
    #[error(
        "data file {file} is damaged (size {found_size}, sealed at {expected_size}; crc {found_crc:#010x}, sealed {expected_crc:#010x}); found while reading at offset {offset}"
    )]
    DataFileDamaged {
        /// The file.
        file: PathBuf,
        /// First record offset of the read that checked it.
        offset: u64,
        /// Size when sealed.
        expected_size: u64,
        /// Size now.
        found_size: u64,
        /// CRC-32 when sealed.
        expected_crc: u32,
        /// CRC-32 now.
        found_crc: u32,
    },
    /// A row whose values do not match the checksum stored with it: the dataset's
    /// files are damaged.
    #[error(
        "the record at offset {offset} of {dataset} does not match its checksum (stored {expected:#010x}, computed {found:#010x}): the dataset's files are damaged"
    )]
    ChecksumMismatch {
        /// The dataset.
        dataset: String,
        /// Record offset.
        offset: u64,
        /// Checksum stored in the row.
        expected: u32,
        /// Checksum of the values read.
        found: u32,
    },
    /// Lance panicked reading the dataset (its decoders assert on some damaged pages).
    #[error(
        "Lance failed reading {dataset} from offset {offset}; its files are probably damaged: {message}"
    )]
    Panicked {
        /// The dataset.
        dataset: String,
        /// First offset of the read.
        offset: u64,
        /// What the panic said.
        message: String,
    },
    /// [`crate::LanceBucket::buffer`] was given a batch admitted before another
    /// change of the bucket: its offsets are no longer the next ones. Nothing was
    /// buffered.
    #[error(
        "a batch admitted at offset {admitted_at} was buffered when the bucket was at {bucket_at}: admit it again"
    )]
    AdmittedOutOfTurn {
        /// The first offset the batch was admitted at.
        admitted_at: u64,
        /// The bucket's next offset.
        bucket_at: u64,
    },
    /// The dataset holds rows this handle did not write (another writer changed it):
    /// the bucket stops rather than guess which records are whose.
    #[error(
        "the dataset at {dataset} holds {rows} rows; this handle has {persisted} persisted and {buffered} buffered: another writer changed it"
    )]
    ChangedByAnotherWriter {
        /// The dataset.
        dataset: String,
        /// Rows the dataset holds.
        rows: u64,
        /// Rows this handle knows persisted.
        persisted: u64,
        /// Records this handle holds buffered.
        buffered: u64,
    },
    /// The dataset holds a version this handle did not write (another writer
    /// committed after this handle last looked): this handle writes nothing more, so
    /// offsets never interleave. Reopen to go on from what the dataset holds.
    #[error(
        "the dataset at {dataset} is at version {version}, written by another writer (this handle would have committed version {expected} next); it writes nothing more"
    )]
    CommittedByAnotherWriter {
        /// The dataset.
        dataset: String,
        /// The dataset's latest version.
        version: u64,
        /// The version this handle's next commit was to have.
        expected: u64,
    },
    /// Another writer holds the lease of this remote bucket.
    #[error(
        "the bucket is written by {holder} (lease {lease}, which expires in {expires_in:?} unless renewed): one writer per bucket"
    )]
    LeaseHeld {
        /// The lease object.
        lease: String,
        /// Who holds it.
        holder: String,
        /// Time left before it may be taken over.
        expires_in: std::time::Duration,
    },
    /// This writer's lease was taken over (it expired, and another writer took it):
    /// this handle commits and acknowledges nothing more.
    #[error(
        "this writer lost the lease {lease} to {holder}: it writes nothing more (records acknowledged before are in its WAL)"
    )]
    LeaseLost {
        /// The lease object.
        lease: String,
        /// Who holds it now, if it could be read.
        holder: String,
    },
    /// A consumer group name that is not one plain name (see
    /// [`crate::validate_group`]).
    #[error("invalid consumer group name {group:?}: {reason}")]
    InvalidGroup {
        /// The name given.
        group: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A commit that would move a group back: commits only go forward (a seek moves
    /// a group anywhere, explicitly). Nothing was written.
    #[error(
        "consumer group {group:?} of {bucket}: commit of offset {requested} refused: the group has committed offset {committed}, and a commit never moves it back (seek does)"
    )]
    GroupBackwards {
        /// The group.
        group: String,
        /// The bucket.
        bucket: String,
        /// Its committed offset.
        committed: u64,
        /// The offset asked for.
        requested: u64,
    },
    /// A commit or seek past the bucket's records. Nothing was written.
    #[error(
        "consumer group {group:?} of {bucket}: offset {requested} refused: the bucket holds offsets below {end} only (its end is {end})"
    )]
    GroupPastEnd {
        /// The group.
        group: String,
        /// The bucket.
        bucket: String,
        /// The offset asked for.
        requested: u64,
        /// The bucket's end (its record count).
        end: u64,
    },
    /// A commit made from a stale view of the group: another committer changed it
    /// after this one read it. Nothing was written.
    #[error(
        "consumer group {group:?} of {bucket}: commit of offset {requested} refused: this committer read the group at {}, but another committer has since moved it to {}",
        seen.map_or_else(|| "no committed offset".to_owned(), |o| format!("offset {o}")),
        found.map_or_else(|| "no committed offset (deleted)".to_owned(), |o| format!("offset {o}"))
    )]
    GroupConflict {
        /// The group.
        group: String,
        /// The bucket.
        bucket: String,
        /// The committed offset this committer had read (`None`: none).
        seen: Option<u64>,
        /// The committed offset found now (`None`: none).
        found: Option<u64>,
        /// The offset asked for.
        requested: u64,
    },
    /// A consumer group's file or object that does not decode: it is damaged, and no
    /// offset is guessed from it.
    #[error("consumer group state {path} is damaged: {reason}")]
    GroupDamaged {
        /// The file or object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// This writer's lease expired while the store did not answer its renewal: the
    /// handle commits and acknowledges nothing until a renewal goes through, which it
    /// does once the store answers, unless another writer took the lease meanwhile.
    #[error(
        "the lease {lease} of this writer expired {expired_ago:?} ago and the store did not answer its renewal ({reason}); writes are suspended until the store answers (this writer takes its lease back then unless another writer took it)"
    )]
    LeaseSuspended {
        /// The lease object.
        lease: String,
        /// How long ago the lease expired.
        expired_ago: std::time::Duration,
        /// The store's last failure.
        reason: String,
    },
    /// A read from below the bucket's log start: retention removed the records
    /// there. Offsets never shift; the first record kept is at `log_start`.
    #[error(
        "offset {offset} of {dataset} is below its log start {log_start}: the records before it were trimmed (by retention or a trim; offsets do not move: read from offset {log_start})"
    )]
    BelowLogStart {
        /// The dataset.
        dataset: String,
        /// The offset asked for.
        offset: u64,
        /// The first offset the bucket still holds.
        log_start: u64,
    },
    /// A trim past the records the dataset holds. Nothing was removed.
    #[error(
        "trim of {dataset} before offset {requested} refused: the dataset holds offsets below {end} only (records still buffered are trimmed once flushed)"
    )]
    TrimPastEnd {
        /// The dataset.
        dataset: String,
        /// The offset asked for.
        requested: u64,
        /// One past the dataset's last offset.
        end: u64,
    },
    /// A snapshot name that is not one plain name (see [`crate::validate_snapshot`]).
    #[error("invalid snapshot name {name:?}: {reason}")]
    InvalidSnapshot {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No snapshot of that name.
    #[error("{dataset} has no snapshot named {name:?}")]
    SnapshotNotFound {
        /// The dataset.
        dataset: String,
        /// The name asked for.
        name: String,
    },
    /// A snapshot of a bucket with nothing committed: there is no version to pin.
    #[error(
        "snapshot {name:?} of {dataset} refused: the bucket has no committed records yet (a snapshot pins a committed version)"
    )]
    NothingToSnapshot {
        /// The dataset.
        dataset: String,
        /// The name asked for.
        name: String,
    },
    /// A snapshot of that name exists already (a name pins one version for good).
    #[error("{dataset} has a snapshot named {name:?} already (of version {version})")]
    SnapshotExists {
        /// The dataset.
        dataset: String,
        /// The name.
        name: String,
        /// The version it pins.
        version: u64,
    },
    /// The dataset's log start record does not decode, or does not match its
    /// fragments: no offset is guessed from it.
    #[error("the log start of {dataset} is damaged: {reason}")]
    LogStartDamaged {
        /// The dataset.
        dataset: String,
        /// What is wrong.
        reason: String,
    },
    /// A column type this crate cannot read back as record values.
    #[error("column {column:?} has Arrow type {data_type}, which cannot be read as record values")]
    UnsupportedColumn {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
    },
}

impl Error {
    pub(crate) fn lance<'a>(
        op: &'static str,
        path: &'a str,
    ) -> impl FnOnce(lance::Error) -> Error + 'a {
        move |source| Error::Lance {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// Lance panicked reading `dataset` from `offset` (its decoders assert on damaged
    /// pages): the read's error, saying what the panic said.
    pub(crate) fn panicked(
        dataset: &str,
        offset: u64,
        payload: &(dyn std::any::Any + Send),
    ) -> Error {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned());
        Error::Panicked {
            dataset: dataset.to_owned(),
            offset,
            message,
        }
    }

    pub(crate) fn arrow(op: &'static str) -> impl FnOnce(arrow::error::ArrowError) -> Error {
        move |source| Error::Arrow { op, source }
    }

    /// An error of Lance's object store during `op` on `uri` (data at a URI), kept
    /// whole ([`Error::Store`]).
    pub(crate) fn store<'a>(
        op: &'static str,
        uri: &'a str,
    ) -> impl Fn(object_store::Error) -> Error + 'a {
        move |source| Error::Store {
            op,
            uri: uri.to_owned(),
            source,
        }
    }

    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `message` without the source location Lance appends to its errors (`…, path/to/file.rs:12:5`).
pub(crate) fn without_location(message: &str) -> &str {
    let Some((head, tail)) = message.rsplit_once(", ") else {
        return message;
    };
    let mut parts = tail.rsplitn(3, ':');
    let (col, line, file) = (parts.next(), parts.next(), parts.next());
    let numbers = [col, line]
        .iter()
        .all(|p| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    if numbers && file.is_some_and(|f| f.ends_with(".rs")) {
        head
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::without_location;

    #[test]
    fn lance_source_locations_are_left_out_of_messages() {
        assert_eq!(
            without_location(
                "LanceError(IO): No space left on device (os error 28), /root/.cargo/registry/src/index/lance-file-14.0.2/src/writer/structural.rs:254:9"
            ),
            "LanceError(IO): No space left on device (os error 28)"
        );
        assert_eq!(without_location("plain, message"), "plain, message");
        assert_eq!(without_location("a, b.rs:x:1"), "a, b.rs:x:1");
    }
}

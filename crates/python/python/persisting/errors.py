"""Exceptions raised by Persisting.

Every storage failure is a :class:`StorageError`; its message is the Rust error's,
which names what failed (path, offset, segment, option and value).
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "WALError",
    "InvalidOptionError",
    "SchemaError",
    "BucketLockedError",
    "StoreUnavailableError",
    "LogStartError",
]


class StorageError(Exception):
    """Base exception of storage operations."""


class WALError(StorageError):
    """The write-ahead log failed, is damaged, or lacks records Lance does not hold."""


class InvalidOptionError(StorageError, ValueError):
    """An option with a value it cannot take; the message names the option."""


class SchemaError(StorageError, TypeError):
    """A batch whose field types conflict with the bucket's columns; nothing of it is
    stored."""


class BucketLockedError(StorageError):
    """Another backend, in this process or another, has the bucket open for writing."""


class StoreUnavailableError(StorageError, TimeoutError):
    """A put found no room within ``put_timeout``: the records not committed yet are at
    ``max_unflushed_bytes`` (or the WAL at ``max_wal_size``) because the store has not
    taken them; the message names the store, its last error and for how long it has
    failed. Nothing of the batch is stored: it may be retried."""


class LogStartError(StorageError, LookupError):
    """A read below the bucket's log start: retention removed the records there.

    Offsets never shift: the first record the bucket still holds is at
    :attr:`log_start`, and a reader resumes from there (``get(offset=e.log_start)``).
    """

    def __init__(self, message: str, offset: int | None = None, log_start: int | None = None):
        super().__init__(message)
        #: the offset that was asked for
        self.offset = offset
        #: the first offset the bucket holds
        self.log_start = log_start

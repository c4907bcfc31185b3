"""Storage backends for Pulsing's queue: :class:`LanceBackend` and
:class:`PersistingBackend`.

Pulsing builds one backend per bucket, ``cls(bucket_id=..., storage_path=...,
batch_size=..., **backend_options)``, and calls it as its ``StorageBackend`` protocol
says; the method signatures below follow what Pulsing 0.1.2 calls:

- ``get(limit, offset)``: limit first when positional (``get(offset=5, limit=10)``,
  as the API reference writes it, works by keyword);
- ``get_stream(limit, offset, wait, timeout)``: an async generator of *lists* of
  records, one list per read; ``block=True`` is accepted for ``wait=True``.

Every method that touches storage is a coroutine whose work runs in Rust, off the
event loop's thread and without the GIL.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from typing import Any, AsyncIterator, Protocol, runtime_checkable

from . import _native
from .errors import InvalidOptionError

__all__ = ["LanceBackend", "PersistingBackend", "StorageBackend"]

Record = dict[str, Any]

#: records a stream reads from storage at once (it yields them batch_size at a time)
_READ_AHEAD = 4096


@runtime_checkable
class StorageBackend(Protocol):
    """What Pulsing calls on a bucket's backend."""

    async def put(self, record: Record) -> None: ...

    async def put_batch(self, records: list[Record]) -> None: ...

    async def get(self, limit: int | None = None, offset: int = 0) -> list[Record]: ...

    def get_stream(
        self,
        limit: int | None = None,
        offset: int = 0,
        wait: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[list[Record]]: ...

    async def flush(self) -> None: ...

    async def stats(self) -> dict[str, Any]: ...

    def total_count(self) -> int: ...


#: options of a bucket whose ``storage_path`` is an object-store URI (``s3://…``):
#: ``wal_dir`` (local directory of the WAL and lock, required then),
#: ``storage_options`` (dict, pylance's keys), ``lease_term`` and ``flush_interval``
#: (seconds)
_URI_OPTIONS = ("wal_dir", "storage_options", "lease_term", "flush_interval")


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(
            f"invalid option {name} = {value!r}: must be an int of at least {minimum}"
        )
    return value


def _path(storage_path: Any) -> str:
    try:
        path = os.fspath(storage_path)
    except TypeError:
        raise InvalidOptionError(
            f"invalid option storage_path = {storage_path!r}: must be a str or path"
        ) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path


def _warn_ignored(cls: type, ignored: dict[str, Any]) -> None:
    if ignored:
        names = ", ".join(sorted(ignored))
        warnings.warn(
            f"{cls.__name__}: ignoring unknown option(s) {names}",
            stacklevel=3,
        )


class LanceBackend:
    """A bucket stored as a Lance dataset, with an in-memory buffer.

    A put is acknowledged once in the buffer; it is durable after the next flush
    (at ``flush_threshold`` buffered records, or an explicit :meth:`flush`). For
    durability before a flush, use :class:`PersistingBackend` with ``enable_wal``.
    """

    _kind = "lance"

    def __init__(
        self,
        bucket_id: int,
        storage_path: str | os.PathLike[str],
        batch_size: int = 100,
        flush_threshold: int = 1000,
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in _URI_OPTIONS if k in kwargs}
        _warn_ignored(type(self), kwargs)
        options = {
            "batch_size": _count("batch_size", batch_size, 1),
            "flush_threshold": _count("flush_threshold", flush_threshold, 1),
            **extra,
        }
        self._open(bucket_id, storage_path, options)

    def _open(self, bucket_id: Any, storage_path: Any, options: dict[str, Any]) -> None:
        self.bucket_id = _count("bucket_id", bucket_id, 0)
        self.storage_path = _path(storage_path)
        self.batch_size = options["batch_size"]
        self._bucket = _native.Bucket(self.bucket_id, self.storage_path, options, self._kind)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bucket_id={self.bucket_id}, storage_path={self.storage_path!r})"

    async def put(self, record: Record) -> None:
        """Stores one record (a dict); returns once it is acknowledged."""
        await self._bucket.put(record)

    async def put_batch(self, records: list[Record]) -> None:
        """Stores a list of records as one unit: all acknowledged, or none stored."""
        await self._bucket.put_batch(records)

    async def get(self, limit: int | None = None, offset: int = 0) -> list[Record]:
        """Records ``[offset, offset + limit)`` clipped to what exists (``limit=None``:
        to the end)."""
        offset = _count("offset", offset, 0)
        if limit is not None:
            limit = _count("limit", limit, 0)
        return await self._bucket.get(offset, limit)

    async def get_stream(
        self,
        limit: int | None = None,
        offset: int = 0,
        wait: bool = False,
        timeout: float | None = None,
        *,
        block: bool | None = None,
    ) -> AsyncIterator[list[Record]]:
        """Yields lists of up to ``batch_size`` records from ``offset``, at most
        ``limit`` in all (``None``: no limit).

        With ``wait`` (or ``block``), a stream that has caught up waits for new
        records (woken by a put, no polling) instead of ending; ``timeout`` (seconds)
        bounds each wait, after which the stream ends.
        """
        if block is not None:
            wait = wait or block
        offset = _count("offset", offset, 0)
        remaining = None if limit is None else _count("limit", limit, 0)
        # one read from storage serves several yields (each await of the storage
        # layer is a round trip between threads), and after a full read the next one
        # starts while the consumer takes this one's batches; it does not wait for
        # new records (a wait, and its timeout, start only once the stream caught up)
        # (a whole number of batches, so only a stream's last batch can be short)
        step = self.batch_size * max(1, _READ_AHEAD // self.batch_size)
        ahead: asyncio.Future | None = None
        try:
            while remaining is None or remaining > 0:
                want = step if remaining is None else min(step, remaining)
                records = await ahead if ahead is not None else []
                ahead = None
                if not records:
                    records = await self._bucket.read(offset, want, bool(wait), timeout)
                if not records:
                    return
                offset += len(records)
                if remaining is not None:
                    remaining -= len(records)
                if len(records) == want and remaining != 0:
                    more = step if remaining is None else min(step, remaining)
                    ahead = asyncio.ensure_future(self._bucket.read(offset, more, False, None))
                for i in range(0, len(records), self.batch_size):
                    yield records[i : i + self.batch_size]
        finally:
            if ahead is not None:
                ahead.cancel()

    async def flush(self) -> None:
        """Makes every buffered record a durable Lance commit."""
        await self._bucket.flush()

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes: ``bucket_id``, ``total_count``, ``buffer_count``,
        ``persisted_count``, ``storage_path``, ``buffer_size``, ``backend``, and the
        WAL and compression figures."""
        return await self._bucket.stats()

    def total_count(self) -> int:
        """Acknowledged records (buffered and persisted)."""
        return self._bucket.total_count()

    async def close(self) -> None:
        """Flushes and releases the bucket; waiting streams end, later calls raise.
        Optional: with a WAL, acknowledged records survive without it."""
        await self._bucket.close()

    async def compact(self) -> None:
        """Flushes, then merges small Lance fragments (offsets unchanged)."""
        await self._bucket.compact()

    async def __aenter__(self) -> "LanceBackend":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class PersistingBackend(LanceBackend):
    """:class:`LanceBackend` with a write-ahead log, compression and metrics.

    With ``enable_wal=True`` every put is written to a checksummed WAL before it is
    acknowledged: with ``wal_sync_interval=0`` it is fsynced first (concurrent puts
    share one fsync), so it survives a process kill and a power loss; with an interval
    it survives a process kill and a power loss loses at most the last interval.
    ``compression`` (``"zstd"``, ``"lz4"``, ``"snappy"`` or ``None``) applies to WAL
    entries (zstd and lz4 to Lance's columns too). ``enable_metrics`` records
    Prometheus metrics, served over HTTP when ``metrics_addr`` (``"127.0.0.1:9464"``)
    is given; :meth:`get_metrics` reads them.
    """

    _kind = "persisting"

    #: options accepted beyond the named parameters
    _extra = (
        "flush_threshold",
        "target_rows_per_fragment",
        "metrics_addr",
        *_URI_OPTIONS,
    )

    def __init__(
        self,
        bucket_id: int,
        storage_path: str | os.PathLike[str],
        batch_size: int = 100,
        enable_wal: bool = False,
        compression: str | None = None,
        enable_metrics: bool = False,
        wal_sync_interval: float = 1.0,
        max_wal_size: int = 100 * 1024 * 1024,
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in self._extra if k in kwargs}
        _warn_ignored(type(self), kwargs)
        options: dict[str, Any] = {
            "batch_size": _count("batch_size", batch_size, 1),
            "enable_wal": enable_wal,
            "compression": compression,
            "enable_metrics": enable_metrics,
            "wal_sync_interval": wal_sync_interval,
            "max_wal_size": max_wal_size,
            **extra,
        }
        self._open(bucket_id, storage_path, options)

    def get_metrics(self) -> dict[str, float]:
        """This bucket's Prometheus figures by metric name (``persisting_records_total``,
        ``persisting_flush_duration_seconds_count``, ...); empty unless
        ``enable_metrics``."""
        return self._bucket.metrics()

    @property
    def metrics_addr(self) -> str | None:
        """Where this process serves Prometheus metrics, if it does."""
        return _native.Bucket.metrics_addr()

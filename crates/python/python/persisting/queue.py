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
import inspect
import json
import logging
import os
import warnings
import weakref
from typing import Any, AsyncIterator, Protocol, runtime_checkable

from . import _native
from .errors import BucketLockedError, InvalidOptionError

#: where the package reports what a caller may not see raised (Pulsing swallows the
#: exception of a backend's constructor: its user sees only "Actor dropped")
_log = logging.getLogger("persisting")

__all__ = [
    "ConsumerGroup",
    "Groups",
    "LanceBackend",
    "PersistingBackend",
    "StorageBackend",
    "resume",
]

Record = dict[str, Any]

#: records a stream reads from storage at once (it yields them batch_size at a time);
#: a draining stream holds at most two such reads (the one it yields from, the one
#: ahead). Drains of 3·10^5 records, alternated in one process on 2 cores (k records/s,
#: medians of 6): 4,096: 436-456; 8,192: 494; 16,384: 569; 32,768: 500; 65,536: 462
#: (fewer round trips to the runtime, until the dicts of two reads outgrow the caches)
_READ_AHEAD = 16384


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


#: the backends open in this process, by bucket path: a consumer group's commits go
#: through the open backend of a bucket (checked against its acknowledged records)
_OPEN: "weakref.WeakValueDictionary[str, LanceBackend]" = weakref.WeakValueDictionary()


def _key(path: str) -> str:
    """The key of a bucket's place among the open backends: local or remote as the
    storage layer decides (a ``file://`` URI is its local directory)."""
    try:
        kind, where = _native.location(path)
    except ValueError:
        return path  # opening it raises the storage layer's error naming it
    return os.path.abspath(where) if kind == "local" else where


#: options of every bucket beyond the named parameters. For a ``storage_path`` that
#: is an object-store URI (``s3://…``): ``wal_dir`` (local directory of the WAL and
#: lock, required then), ``storage_options`` (dict, pylance's keys), ``lease_term``
#: and ``flush_interval`` (seconds). While the store is slow or away:
#: ``max_unflushed_bytes`` (bytes not committed yet at which puts wait, default
#: 256 MiB) and ``put_timeout`` (seconds a put waits for room before it raises
#: ``StoreUnavailableError``, default 60)
#: Retention (all off by default; records leave from the front, whole fragments at
#: a time, offsets never move): ``retention_records`` (keep at least the last N),
#: ``retention_bytes`` (keep at most about B bytes of data files), ``retention_age``
#: (seconds since written), ``retention_ignores_groups`` (default False: records a
#: consumer group has not committed past stay), ``version_retention`` (seconds old
#: versions, and the space of trimmed records, are kept; default 600).
#: Every option's default, as the Rust library defines it (its ``to_map`` of the
#: default options, in its units: seconds, bytes); the signatures below take theirs
#: from here, and the library checks every value.
_DEFAULTS: dict[str, Any] = json.loads(_native.DEFAULT_OPTIONS_JSON)

#: options :class:`PersistingBackend` takes beyond its signature that
#: :class:`LanceBackend` does not (its own signature names ``flush_threshold``)
_PERSISTING_ONLY = ("flush_threshold", "target_rows_per_fragment")

#: the library's options neither signature names, which both classes take as
#: keyword arguments (filled below the classes, from their signatures)
_MORE_OPTIONS: list[str] = []


def _count(name: str, value: Any, minimum: int | None = None) -> int:
    """An int (a bool or a float is refused here, where its Python type is still
    known), at least ``minimum`` when given; without, the library checks the bounds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" of at least {minimum}"
        raise InvalidOptionError(f"invalid option {name} = {value!r}: must be an int{bound}")
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
        batch_size: int = _DEFAULTS["batch_size"],
        flush_threshold: int = _DEFAULTS["flush_threshold"],
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in _MORE_OPTIONS if k in kwargs}
        _warn_ignored(type(self), kwargs)
        options = {
            "batch_size": _count("batch_size", batch_size),
            "flush_threshold": _count("flush_threshold", flush_threshold),
            **extra,
        }
        self._open(bucket_id, storage_path, options)

    def _open(self, bucket_id: Any, storage_path: Any, options: dict[str, Any]) -> None:
        self.bucket_id = _count("bucket_id", bucket_id, 0)
        self.storage_path = _path(storage_path)
        self.batch_size = options["batch_size"]
        try:
            self._bucket = _native.Bucket(self.bucket_id, self.storage_path, options, self._kind)
        except BucketLockedError as e:
            holder = _OPEN.get(_key(self.storage_path))
            if holder is None:
                _log.error("cannot open %s: %s", self.storage_path, e)
                raise
            message = (
                f"{self.storage_path} is already open by {holder!r} in this process: two "
                "queues share this directory. Pulsing puts bucket i of every queue given "
                "storage_path=S at S/bucket_i, whatever its topic, and two topics in one "
                "bucket would mix their records; give each topic its own storage_path "
                f"(or none: ./queue_storage/{{topic}}). {e}"
            )
            _log.error("%s", message)
            raise BucketLockedError(message) from e
        _OPEN[_key(self.storage_path)] = self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bucket_id={self.bucket_id}, storage_path={self.storage_path!r})"

    async def put(self, record: Record) -> None:
        """Stores one record (a dict); returns once it is acknowledged."""
        await self._bucket.put(record)

    async def put_batch(self, records: list[Record]) -> None:
        """Stores a list of records as one unit: all acknowledged, or none stored."""
        await self._bucket.put_batch(records)

    async def get(
        self, limit: int | None = None, offset: int = 0, *, snapshot: str | None = None
    ) -> list[Record]:
        """Records ``[offset, offset + limit)`` clipped to what exists (``limit=None``:
        to the end); with ``snapshot``, of that snapshot (the bucket as it was).

        Below the log start (records removed by retention or :meth:`trim`) it raises
        :class:`LogStartError`, whose ``log_start`` is where the records begin."""
        offset = _count("offset", offset, 0)
        if limit is not None:
            limit = _count("limit", limit, 0)
        return await self._bucket.get(offset, limit, snapshot)

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
        if _OPEN.get(_key(self.storage_path)) is self:
            del _OPEN[_key(self.storage_path)]
        await self._bucket.close()

    async def commit_offset(self, group: str, offset: int) -> int:
        """Commits ``offset`` (the next offset the group reads) for consumer group
        ``group``; returns once it is durable (fsynced, or acknowledged by the object
        store). Refused (``StorageError`` naming the group and both offsets) if it
        would move the group back or past the bucket's records."""
        done = await self._bucket.commit_offset(group, _count("offset", offset, 0))
        return done["offset"]

    async def committed_offset(self, group: str) -> int | None:
        """The committed offset of ``group`` (``None``: it never committed)."""
        found = await self._bucket.committed_offset(group)
        return None if found is None else found["offset"]

    async def seek_group(self, group: str, offset: int) -> int:
        """Moves ``group`` to ``offset``, back or forward, within the bucket."""
        done = await self._bucket.seek_group(group, _count("offset", offset, 0))
        return done["offset"]

    async def delete_group(self, group: str) -> bool:
        """Deletes ``group``; whether it had a committed offset."""
        return await self._bucket.delete_group(group)

    async def groups(self) -> list[dict[str, Any]]:
        """Every consumer group of the bucket: ``group``, ``committed``, ``end``
        (the bucket's records) and ``lag`` (``end - committed``)."""
        return await self._bucket.groups()

    async def trim(self, before: int) -> dict[str, Any]:
        """Removes the records below ``before`` (acknowledged ones are flushed first),
        by whole Lance fragments: one holding ``before`` stays. Offsets never move;
        reads below the new log start raise :class:`LogStartError`. Returns
        ``log_start``, ``records``, ``fragments``, ``files_removed``,
        ``bytes_removed``, ``duration_seconds``."""
        return await self._bucket.trim(_count("before", before, 0))

    async def snapshot(self, name: str) -> dict[str, Any]:
        """Pins every acknowledged record under ``name`` (a Lance tag: pylance opens
        it as ``lance.dataset(uri, version=name)``); retention and cleanup keep what
        it needs until :meth:`delete_snapshot`. Returns ``name``, ``version``,
        ``log_start``, ``end_offset``, ``created_at``."""
        return await self._bucket.snapshot(name)

    async def snapshots(self) -> list[dict[str, Any]]:
        """The bucket's snapshots, by name."""
        return await self._bucket.snapshots()

    async def delete_snapshot(self, name: str) -> None:
        """Deletes the snapshot ``name``; what only it kept is removed once its
        versions are older than ``version_retention``."""
        await self._bucket.delete_snapshot(name)

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
    @property
    def _extra(self) -> tuple[str, ...]:
        return (*_PERSISTING_ONLY, "metrics_addr", *_MORE_OPTIONS)

    def __init__(
        self,
        bucket_id: int,
        storage_path: str | os.PathLike[str],
        batch_size: int = _DEFAULTS["batch_size"],
        enable_wal: bool = _DEFAULTS["enable_wal"],
        compression: str | None = _DEFAULTS["compression"],
        enable_metrics: bool = _DEFAULTS["enable_metrics"],
        wal_sync_interval: float = _DEFAULTS["wal_sync_interval"],
        max_wal_size: int = _DEFAULTS["max_wal_size"],
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in self._extra if k in kwargs}
        _warn_ignored(type(self), kwargs)
        options: dict[str, Any] = {
            "batch_size": _count("batch_size", batch_size),
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


_MORE_OPTIONS.extend(
    k
    for k in _native.KNOWN_OPTIONS
    if k not in inspect.signature(PersistingBackend.__init__).parameters
    and k not in _PERSISTING_ONLY
)


#: the consumer groups of one bucket opened by path, without its writer:
#: ``Groups(storage_path, wal_dir=None, storage_options=None)`` with awaitable
#: ``commit(group, offset)``, ``committed(group)``, ``seek``, ``delete`` and ``list()``
#: (each group's ``committed``, the bucket's ``end`` and the ``lag``)
Groups = _native.Groups


class ConsumerGroup:
    """Durable offsets of a consumer group for a Pulsing reader, which keeps its
    offsets in memory: :func:`resume` sets the reader to the group's committed offsets,
    :meth:`commit` commits the reader's current ones (at-least-once: commit after
    processing). A reader restarted after a crash re-reads at most what it read after
    its last commit.

    Each bucket's commit goes through the backend of that bucket open in this process
    (Pulsing's bucket actors, when the actor system is local), else through the
    bucket's storage directly (no writer lock needed). A commit is made from the state
    this helper last read: if another committer of the group moved it meanwhile, the
    commit raises ``StorageError`` naming the offset it lost to.
    """

    def __init__(
        self,
        reader: Any,
        group: str,
        storage_path: str,
        wal_dir: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        for needed in ("set_offset", "_get_bucket_ids", "_offsets"):
            if not hasattr(reader, needed):
                raise TypeError(
                    f"{type(reader).__name__} is not a Pulsing QueueReader "
                    f"(it has no {needed}); Pulsing 0.1.2's read_queue returns one"
                )
        self.reader = reader
        self.group = group
        self.storage_path = _path(storage_path)
        self._wal_dir = wal_dir
        self._storage_options = storage_options
        self._standalone: dict[int, Any] = {}
        #: per bucket, the committed state last read or written: (offset, generation)
        self._seen: dict[int, tuple[int, int] | None] = {}

    def bucket_path(self, bucket_id: int) -> str:
        """Where Pulsing keeps bucket ``bucket_id`` of the queue."""
        if "://" in self.storage_path:
            return f"{self.storage_path.rstrip('/')}/bucket_{bucket_id}"
        return os.path.join(self.storage_path, f"bucket_{bucket_id}")

    def _groups(self, bucket_id: int) -> Any:
        """The native handle that commits for ``bucket_id``: its open backend's
        bucket, else the bucket's groups opened by path."""
        path = self.bucket_path(bucket_id)
        backend = _OPEN.get(_key(path))
        if backend is not None:
            return backend._bucket, True
        if bucket_id not in self._standalone:
            # the bucket's local directory, as its backend is given it
            self._standalone[bucket_id] = _native.Groups(
                path, self._wal_dir, self._storage_options
            )
        return self._standalone[bucket_id], False

    async def _committed(self, bucket_id: int) -> dict[str, Any] | None:
        handle, is_bucket = self._groups(bucket_id)
        if is_bucket:
            return await handle.committed_offset(self.group)
        return await handle.committed(self.group)

    async def load(self) -> dict[int, int]:
        """Sets the reader to the group's committed offsets (0 where a bucket has
        none); returns them by bucket."""
        offsets = {}
        for bid in self.reader._get_bucket_ids():
            found = await self._committed(bid)
            self._seen[bid] = None if found is None else (found["offset"], found["generation"])
            offsets[bid] = 0 if found is None else found["offset"]
            self.reader.set_offset(offsets[bid], bid)
        return offsets

    async def commit(self) -> dict[int, int]:
        """Commits the reader's offsets of every bucket that moved; returns the
        committed offsets by bucket."""
        committed = {}
        for bid in self.reader._get_bucket_ids():
            offset = self.reader._offsets.get(bid, 0)
            seen = self._seen.get(bid)
            if (seen is None and offset == 0) or (seen is not None and seen[0] == offset):
                committed[bid] = offset
                continue
            handle, is_bucket = self._groups(bid)
            call = handle.commit_offset if is_bucket else handle.commit
            done = await call(
                self.group,
                offset,
                None if seen is None else seen[0],
                None if seen is None else seen[1],
                True,
            )
            self._seen[bid] = (done["offset"], done["generation"])
            committed[bid] = done["offset"]
        return committed


async def resume(
    reader: Any,
    group: str,
    storage_path: str | os.PathLike[str] | None = None,
    *,
    wal_dir: str | None = None,
    storage_options: dict[str, str] | None = None,
) -> ConsumerGroup:
    """Resumes a Pulsing reader in consumer group ``group``: sets it to the group's
    committed offsets and returns the :class:`ConsumerGroup` whose ``commit()``
    commits the reader's offsets later. ``storage_path`` is the queue's (default: the
    reader's queue's); for a queue at a URI, ``wal_dir`` and ``storage_options`` as
    given to the backends.

    ::

        reader = await pq.read_queue(system, "q", backend="persisting", storage_path=path)
        group = await pst.queue.resume(reader, "trainer")   # added line 1
        while batch := await reader.get(limit=100):
            process(batch)
            await group.commit()                            # added line 2
    """
    if storage_path is None:
        storage_path = getattr(getattr(reader, "queue", None), "storage_path", None)
        if storage_path is None:
            raise TypeError("resume needs the queue's storage_path: the reader does not name it")
    options = getattr(getattr(reader, "queue", None), "backend_options", None) or {}
    if wal_dir is None:
        wal_dir = options.get("wal_dir")
    if storage_options is None:
        storage_options = options.get("storage_options")
    consumer = ConsumerGroup(reader, group, os.fspath(storage_path), wal_dir, storage_options)
    await consumer.load()
    return consumer

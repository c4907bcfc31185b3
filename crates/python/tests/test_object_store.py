"""A bucket whose data is at an object-store URI and whose WAL is on local disk, on
Lance's process-wide in-memory store (``shared-memory://``): the code path of a
bucket on S3, without a server."""

from __future__ import annotations

import itertools
import os

import pytest

from persisting import InvalidOptionError, StorageError
from persisting.queue import LanceBackend, PersistingBackend

_names = itertools.count()


def _uri(name: str) -> str:
    return f"shared-memory://pytest-{os.getpid()}-{next(_names)}/{name}"


async def test_records_survive_a_restart_from_the_local_wal_and_reach_the_uri(tmp_path):
    uri = _uri("bucket_0")
    opts = dict(
        enable_wal=True,
        wal_sync_interval=0,
        wal_dir=str(tmp_path / "local"),
        storage_options={"aws_region": "us-east-1"},
    )
    b = PersistingBackend(bucket_id=0, storage_path=uri, **opts)
    await b.put_batch([{"id": str(i), "n": i} for i in range(10)])
    await b.flush()
    await b.put_batch([{"id": str(i), "n": i} for i in range(10, 15)])
    assert (tmp_path / "local" / "wal").is_dir()
    del b  # no close: the last five are in the WAL only
    import gc

    gc.collect()
    b = PersistingBackend(bucket_id=0, storage_path=uri, **opts)
    stats = await b.stats()
    assert (stats["persisted_count"], stats["buffer_count"]) == (10, 5)
    assert [r["n"] for r in await b.get()] == list(range(15))
    await b.close()


async def test_a_second_writer_at_the_uri_is_refused_and_bad_uri_options_are_named(tmp_path):
    uri = _uri("bucket_0")
    first = LanceBackend(bucket_id=0, storage_path=uri, wal_dir=str(tmp_path / "a"))
    await first.put({"id": "1"})
    with pytest.raises(StorageError, match="_lease"):
        LanceBackend(bucket_id=0, storage_path=uri, wal_dir=str(tmp_path / "b"))
    with pytest.raises(InvalidOptionError, match="storage_options"):
        LanceBackend(bucket_id=0, storage_path=_uri("x"), wal_dir=str(tmp_path / "c"), storage_options="x")
    with pytest.raises(InvalidOptionError, match="flush_interval"):
        PersistingBackend(bucket_id=0, storage_path=_uri("y"), wal_dir=str(tmp_path / "d"), flush_interval=-1)
    await first.close()

"""A bucket whose data is at an object-store URI and whose WAL is on local disk, on
Lance's process-wide in-memory store (``shared-memory://``: the code path of a
bucket on S3, without a server) and on a real S3-compatible server when
``PERSISTING_TEST_S3`` names a bucket URI (``scripts/s3-server.sh`` starts one and
prints it with the endpoint and credentials as ``AWS_*``; CI does)."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from persisting import InvalidOptionError, StorageError
from persisting.queue import LanceBackend, PersistingBackend

_names = itertools.count()


_RUN = f"pytest-{os.getpid()}-{time.time_ns()}"


@pytest.fixture(params=["shared-memory", "s3"])
def store(request) -> str:
    """The root of the URIs a test writes under, once per store."""
    if request.param == "shared-memory":
        return f"shared-memory://{_RUN}"
    root = os.environ.get("PERSISTING_TEST_S3")
    if not root:
        pytest.skip("PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)")
    return f"{root.rstrip('/')}/{_RUN}"


def _s3_options() -> dict[str, str]:
    """The server's endpoint and credentials as storage options (what a user without
    the AWS_* variables passes)."""
    keys = ["AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
    return {k.lower(): os.environ[k] for k in keys}


def _uri(name: str, root: str = f"shared-memory://{_RUN}") -> str:
    return f"{root}/{next(_names)}/{name}"


async def test_records_survive_a_restart_from_the_local_wal_and_reach_the_uri(tmp_path, store):
    uri = _uri("bucket_0", store)
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


async def test_a_second_writer_at_the_uri_is_refused_and_bad_uri_options_are_named(tmp_path, store):
    uri = _uri("bucket_0", store)
    first = LanceBackend(bucket_id=0, storage_path=uri, wal_dir=str(tmp_path / "a"))
    await first.put({"id": "1"})
    with pytest.raises(StorageError, match="_lease"):
        LanceBackend(bucket_id=0, storage_path=uri, wal_dir=str(tmp_path / "b"))
    with pytest.raises(InvalidOptionError, match="storage_options"):
        LanceBackend(bucket_id=0, storage_path=_uri("x"), wal_dir=str(tmp_path / "c"), storage_options="x")
    with pytest.raises(InvalidOptionError, match="flush_interval"):
        PersistingBackend(bucket_id=0, storage_path=_uri("y"), wal_dir=str(tmp_path / "d"), flush_interval=-1)
    await first.close()


async def test_pylance_reads_what_a_bucket_on_s3_wrote_with_the_same_storage_options(tmp_path):
    root = os.environ.get("PERSISTING_TEST_S3")
    if not root:
        pytest.skip("PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)")
    import lance

    uri = _uri("bucket_0", f"{root.rstrip('/')}/{_RUN}")
    opts = _s3_options()
    b = LanceBackend(bucket_id=0, storage_path=uri, wal_dir=str(tmp_path), storage_options=opts)
    await b.put_batch([{"id": str(i), "n": i} for i in range(100)])
    await b.flush()
    ds = lance.dataset(f"{uri}/data.lance", storage_options=opts)
    assert ds.count_rows() == 100
    assert ds.to_table(offset=98, limit=2).column("n").to_pylist() == [98, 99]
    await b.close()

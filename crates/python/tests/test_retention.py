"""Retention and snapshots from Python: trims and the retention options keep every
offset and free space (on local disk and on S3), a read below the log start raises
``LogStartError`` naming it (through Pulsing 0.1.2 too), and snapshots read the bucket
as it was, from Persisting and from pylance."""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import pytest

import persisting as pst
from persisting.errors import InvalidOptionError, LogStartError, StorageError
from persisting.queue import PersistingBackend

_RUN = f"pytest-retention-{os.getpid()}-{time.time_ns()}"
_names = itertools.count()


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(storage_path, extra options, a function counting the data's objects/files and
    their bytes) on local disk, and on the S3 server when one is configured."""
    if request.param == "local":
        path = tmp_path / "bucket"
        return str(path), {}, lambda: _local_usage(path / "data.lance")
    root = os.environ.get("PERSISTING_TEST_S3")
    if not root:
        pytest.skip("PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)")
    uri = f"{root.rstrip('/')}/{_RUN}/{next(_names)}/bucket_0"
    return uri, {"wal_dir": str(tmp_path / "local")}, lambda: _s3_usage(uri + "/data.lance")


def _local_usage(path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _s3_usage(uri: str) -> tuple[int, int]:
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        endpoint_override=os.environ["AWS_ENDPOINT"].split("://", 1)[1],
        scheme="http",
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )
    infos = s3.get_file_info(fs.FileSelector(uri.split("://", 1)[1], recursive=True))
    files = [i for i in infos if i.type == fs.FileType.File]
    return len(files), sum(i.size for i in files)


async def _fill(b, start: int, flushes: int) -> None:
    for k in range(flushes):
        base = start + 100 * k
        await b.put_batch([{"id": base + i, "text": "x" * 200} for i in range(100)])
        await b.flush()


async def _log_start_reaches(b, want: int) -> int:
    for _ in range(400):
        at = (await b.stats())["log_start_offset"]
        if at >= want:
            return at
        await asyncio.sleep(0.05)
    return at


async def test_a_trim_keeps_offsets_frees_space_and_a_snapshot_keeps_its_records(place):
    path, extra, usage = place
    b = PersistingBackend(0, path, enable_wal=True, wal_sync_interval=0, version_retention=0, **extra)
    try:
        await _fill(b, 0, 4)
        snap = await b.snapshot("before-trim")
        assert (snap["log_start"], snap["end_offset"]) == (0, 400)
        await _fill(b, 400, 2)
        files, size = usage()
        report = await b.trim(250)  # the fragment holding 250 stays
        assert (report["log_start"], report["records"]) == (200, 200)
        assert b.total_count() == 600
        assert [r["id"] for r in await b.get(limit=2, offset=200)] == [200, 201]
        with pytest.raises(LogStartError, match="log start 200") as caught:
            await b.get(limit=5, offset=0)
        assert (caught.value.offset, caught.value.log_start) == (0, 200)
        assert isinstance(caught.value, StorageError)
        assert (await b.stats())["log_start_offset"] == 200
        # the snapshot still reads everything it pinned
        pinned = await b.get(offset=0, snapshot="before-trim")
        assert [r["id"] for r in pinned] == list(range(400))
        assert [s["name"] for s in await b.snapshots()] == ["before-trim"]
        await b.delete_snapshot("before-trim")
        after_files, after_size = usage()
        assert after_size < size and after_files < files, (files, size, after_files, after_size)
        with pytest.raises(StorageError, match="no snapshot named"):
            await b.get(offset=0, snapshot="before-trim")
        with pytest.raises(InvalidOptionError, match="invalid snapshot name"):
            await b.snapshot("a/b")
    finally:
        await b.close()


async def test_the_retention_options_trim_after_flushes_and_wait_for_groups(place):
    path, extra, usage = place
    b = PersistingBackend(
        0,
        path,
        enable_wal=True,
        flush_threshold=100_000,
        retention_records=150,
        version_retention=0,
        **extra,
    )
    try:
        await _fill(b, 0, 2)
        await b.commit_offset("trainer", 100)
        await _fill(b, 200, 3)
        assert await _log_start_reaches(b, 100) == 100  # the group holds the rest
        await b.commit_offset("trainer", 500)
        await _fill(b, 500, 1)
        assert await _log_start_reaches(b, 400) == 400
        assert [r["id"] for r in await b.get(offset=400, limit=1)] == [400]
    finally:
        await b.close()
    with pytest.raises(InvalidOptionError, match="retention_records"):
        PersistingBackend(0, path + "-x", retention_records=0, **extra)
    with pytest.raises(InvalidOptionError, match="retention_age"):
        PersistingBackend(0, path + "-y", retention_age=-1, **extra)


def test_pylance_opens_a_snapshot_by_its_name(tmp_path):
    import lance

    async def write():
        b = PersistingBackend(0, str(tmp_path / "b"), enable_wal=True)
        await _fill(b, 0, 2)
        await b.snapshot("epoch-1")
        await _fill(b, 200, 1)
        await b.trim(100)
        await b.close()

    asyncio.run(write())
    uri = str(tmp_path / "b" / "data.lance")
    assert lance.dataset(uri, version="epoch-1").count_rows() == 200
    assert lance.dataset(uri).count_rows() == 200  # 100..300
    assert lance.dataset(uri).config()["persisting.log_start"].startswith("100@")


async def test_a_pulsing_reader_below_the_log_start_is_told_where_records_begin(system, tmp_path):
    import pulsing.streaming as pq

    pq.register_backend("persisting", pst.queue.PersistingBackend)
    path = str(tmp_path / "q")
    options = {"enable_wal": True, "retention_records": 100, "version_retention": 0}
    writer = await pq.write_queue(
        system, "events", backend="persisting", storage_path=path, num_buckets=1,
        backend_options=options,
    )
    for k in range(3):
        for i in range(100):
            await writer.put({"id": f"r{100 * k + i}", "n": 100 * k + i})
        await writer.flush()
    # retention runs after the flushes, on the bucket's own task: wait for its commit
    import lance

    for _ in range(400):
        config = lance.dataset(f"{path}/bucket_0/data.lance").config()
        if config.get("persisting.log_start", "").startswith("200@"):
            break
        await asyncio.sleep(0.05)
    reader = await pq.read_queue(
        system, "events", backend="persisting", storage_path=path, num_buckets=1,
        backend_options=options,
    )
    with pytest.raises(Exception) as caught:  # Pulsing wraps the backend's error
        await reader.get(limit=10)
    message = str(caught.value)
    assert "log start 200" in message and "read from offset 200" in message, message

"""The API reference's three usage examples, as a user writes them, through real
Pulsing 0.1.2 (whose queue API is `pulsing.streaming`; the reference's
`pul.queue` is the 0.1.0 path)."""

from __future__ import annotations

import asyncio

import pulsing.streaming as pq

import persisting as pst


async def test_basic_usage_lance_backend(system, tmp_path):
    pq.register_backend("lance", pst.queue.LanceBackend)

    writer = await pq.write_queue(
        system,
        topic="example",
        backend="lance",
        storage_path=str(tmp_path / "queues"),
    )
    await writer.put({"id": "1", "value": 42})
    await writer.flush()

    reader = await pq.read_queue(system, "example")
    records = await reader.get(limit=10)
    assert records == [{"id": "1", "value": 42}]
    # Pulsing puts a queue given a storage_path at {storage_path}/bucket_{id}
    bucket = next((tmp_path / "queues").glob("bucket_*"))
    assert (bucket / "data.lance").is_dir()


async def test_wal_usage_persisting_backend(system, tmp_path, monkeypatch):
    # no storage_path: Pulsing's default ./queue_storage/{topic}/bucket_{id}
    monkeypatch.chdir(tmp_path)
    pq.register_backend("persisting", pst.queue.PersistingBackend)

    writer = await pq.write_queue(
        system,
        topic="durable",
        backend="persisting",
        backend_options={
            "enable_wal": True,
            "wal_sync_interval": 0.1,
        },
    )
    for i in range(20):
        await writer.put({"id": str(i), "n": i})

    # acknowledged before any flush: the WAL holds them
    wals = list((tmp_path / "queue_storage" / "durable").glob("bucket_*/wal/*.wal"))
    assert wals, "the WAL segments are where Pulsing's layout puts the buckets"
    reader = await pq.read_queue(system, "durable")
    got = await reader.get(limit=100)
    assert sorted(r["n"] for r in got) == list(range(20))


async def test_streaming_blocking_read_woken_by_put(system, tmp_path):
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    storage = str(tmp_path / "stream")
    writer = await pq.write_queue(
        system, topic="stream", backend="persisting", storage_path=storage
    )
    bucket = writer.queue.get_bucket_id("late")
    reader = await pq.read_queue(system, "stream", bucket_id=bucket)

    # non-blocking: nothing there yet
    assert await reader.get(limit=100) == []

    # blocking: the reader waits until a put arrives from another task
    waiting = asyncio.create_task(reader.get(limit=1, wait=True, timeout=30))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await writer.put({"id": "late", "payload": "woke the reader"})
    got = await asyncio.wait_for(waiting, 10)
    assert got == [{"id": "late", "payload": "woke the reader"}]

    # the backend's own stream, as the reference writes it (block=True)
    backend = pst.queue.PersistingBackend(
        bucket_id=0, storage_path=str(tmp_path / "direct")
    )
    await backend.put_batch([{"id": str(i)} for i in range(3)])
    seen = []
    async for batch in backend.get_stream(limit=3, block=True):
        seen.extend(batch)
    assert [r["id"] for r in seen] == ["0", "1", "2"]


def test_the_example_script_runs(tmp_path):
    """`examples/seed_examples.py`, which the README gives a newcomer, as a script."""
    from pathlib import Path

    from conftest import run_python

    script = Path(__file__).parent.parent / "examples" / "seed_examples.py"
    out = run_python(script.read_text(), str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "basic: [{'id': '1', 'value': 42}]" in out.stdout
    assert "stream: woke with [{'id': 'late', 'value': -1}]" in out.stdout

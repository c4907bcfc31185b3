"""The backend called exactly as Pulsing 0.1.2 calls it: keyword construction,
`total_count()` before puts, `get(limit, offset)` positionally, `get_stream(limit,
offset, wait, timeout)` yielding lists, wake-up by a put from another task, and
cancellation that leaves nothing behind."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest
from pulsing.streaming import StorageBackend as PulsingProtocol

import persisting as pst
from persisting.queue import LanceBackend, PersistingBackend


def open_as_pulsing(cls, path, **options):
    """Pulsing's BucketStorage.on_start: keywords, on a thread with no event loop."""
    out = {}

    def build():
        out["backend"] = cls(bucket_id=3, storage_path=str(path), batch_size=100, **options)

    t = threading.Thread(target=build)
    t.start()
    t.join()
    return out["backend"]


@pytest.mark.parametrize("cls", [LanceBackend, PersistingBackend])
async def test_positional_calls_in_pulsings_order(cls, tmp_path):
    b = open_as_pulsing(cls, tmp_path / "b")
    # Pulsing never isinstance-checks a backend (its Protocol also lists optional
    # tensor methods); ours lists what Pulsing calls
    assert isinstance(b, pst.StorageBackend)
    assert b.total_count() == 0
    await b.put({"id": "a", "i": 0})
    await b.put_batch([{"id": "b", "i": 1}, {"id": "c", "i": 2}, {"id": "d", "i": 3}])
    assert b.total_count() == 4

    # get(limit, offset): limit first
    assert [r["i"] for r in await b.get(2, 1)] == [1, 2]
    assert [r["i"] for r in await b.get(limit=1, offset=3)] == [3]
    # the reference's keyword form
    assert [r["i"] for r in await b.get(offset=2, limit=10)] == [2, 3]
    assert [r["i"] for r in await b.get()] == [0, 1, 2, 3]
    assert await b.get(10, 4) == []

    # get_stream(limit, offset, wait, timeout): lists of records
    batches = [batch async for batch in b.get_stream(3, 1, False, None)]
    assert all(isinstance(x, list) for x in batches)
    assert [r["i"] for batch in batches for r in batch] == [1, 2, 3]

    stats = await b.stats()
    for key in ("bucket_id", "total_count", "buffer_count", "persisted_count", "storage_path"):
        assert key in stats
    assert stats["bucket_id"] == 3 and stats["total_count"] == 4
    assert stats["buffer_size"] == stats["buffer_count"] == 4
    assert stats["backend"] == cls._kind
    await b.flush()
    stats = await b.stats()
    assert (stats["persisted_count"], stats["buffer_count"]) == (4, 0)
    assert [r["i"] for r in await b.get(10, 0)] == [0, 1, 2, 3]


async def test_stream_batches_follow_batch_size_and_limit(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), batch_size=7)
    await b.put_batch([{"i": i} for i in range(30)])
    sizes = [len(batch) async for batch in b.get_stream(20, 0, False, None)]
    assert sizes == [7, 7, 6]
    rest = [r["i"] async for batch in b.get_stream(None, 25) for r in batch]
    assert rest == [25, 26, 27, 28, 29]


async def test_waiting_stream_is_woken_by_a_put_from_another_task(tmp_path):
    b = PersistingBackend(
        bucket_id=0, storage_path=str(tmp_path), enable_wal=True, wal_sync_interval=0
    )
    got: list[dict] = []

    async def consume():
        async for batch in b.get_stream(5, 0, True, 30):
            got.extend(batch)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert not task.done() and got == []
    for i in range(5):
        await b.put({"i": i})
        await asyncio.sleep(0.01)
    await asyncio.wait_for(task, 10)
    assert [r["i"] for r in got] == [0, 1, 2, 3, 4]


async def test_wait_timeout_ends_the_stream(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))
    await b.put({"i": 0})
    loop = asyncio.get_running_loop()
    start = loop.time()
    batches = [batch async for batch in b.get_stream(10, 0, True, 0.3)]
    took = loop.time() - start
    assert batches == [[{"i": 0}]]
    assert took >= 0.25, "the stream waited for the timeout after catching up"


async def test_event_loop_keeps_running_while_a_stream_waits(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    batches = [batch async for batch in b.get_stream(1, 0, True, 0.5)]
    t.cancel()
    assert batches == []
    assert ticks >= 20, f"the loop ran only {ticks} ticks in 0.5 s of waiting"


async def test_cancelled_and_closed_streams_leave_nothing_running(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))

    async def consume():
        async for _ in b.get_stream(10, 0, True, None):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stream = b.get_stream(10, 0, True, None)
    await b.put({"i": 0})
    first = await stream.__anext__()
    assert first == [{"i": 0}]
    await stream.aclose()

    # nothing of the cancelled waits is left: the bucket closes at once and a new
    # handle can take its lock
    await asyncio.wait_for(b.close(), 10)
    again = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))
    assert again.total_count() == 1


async def test_a_cancelled_put_is_stored_whole_or_not_at_all(tmp_path):
    b = PersistingBackend(
        bucket_id=0, storage_path=str(tmp_path), enable_wal=True, wal_sync_interval=0
    )
    batch = [{"i": i, "pad": "x" * 100} for i in range(2000)]
    task = asyncio.create_task(b.put_batch(batch))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    # the write ran to its end on the runtime: all 2000 or none, never part
    for _ in range(100):
        if b.total_count() in (0, 2000):
            break
        await asyncio.sleep(0.05)
    await b.close()
    again = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    assert again.total_count() in (0, 2000)
    assert [r["i"] for r in await again.get()] == list(range(again.total_count()))


def test_signatures_match_pulsings_protocol():
    for name in ("get", "get_stream"):
        ours = list(inspect.signature(getattr(PersistingBackend, name)).parameters)
        theirs = list(inspect.signature(getattr(PulsingProtocol, name)).parameters)
        assert ours[: len(theirs)] == theirs, name


async def test_long_streams_read_ahead_and_keep_every_offset_once(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), batch_size=100,
                          flush_threshold=3000)
    await b.put_batch([{"i": i} for i in range(10_000)])
    got = [r["i"] async for batch in b.get_stream(None, 0) for r in batch]
    assert got == list(range(10_000))
    sizes = {len(batch) async for batch in b.get_stream(9000, 500)}
    assert sizes == {100}
    got = [r["i"] async for batch in b.get_stream(9000, 500) for r in batch]
    assert got == list(range(500, 9500))

    # a waiting stream that read ahead: a put after it caught up still wakes it
    async def follow():
        out = []
        async for batch in b.get_stream(10_050, 0, True, 30):
            out.extend(r["i"] for r in batch)
        return out

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    await b.put_batch([{"i": 10_000 + i} for i in range(50)])
    assert await asyncio.wait_for(task, 10) == list(range(10_050))

    # closed after its first batch, with a read ahead in flight: nothing is left
    stream = b.get_stream(None, 0)
    assert len(await stream.__anext__()) == 100
    await stream.aclose()
    await asyncio.wait_for(b.close(), 10)
    PersistingBackend(bucket_id=0, storage_path=str(tmp_path))

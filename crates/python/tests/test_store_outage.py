"""A bucket whose store is away: puts are acknowledged up to ``max_unflushed_bytes``,
then wait ``put_timeout`` and raise ``StoreUnavailableError`` (a ``StorageError`` and a
``TimeoutError``) storing nothing; once the store is back the bucket commits
everything by itself, with no reopen."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from persisting import StorageError, StoreUnavailableError
from persisting.queue import PersistingBackend


def _batch(start: int) -> list[dict]:
    return [{"i": i, "pad": "x" * 100} for i in range(start, start + 5)]


@pytest.mark.parametrize("enable_wal", [True, False])
async def test_puts_are_bounded_while_the_store_is_away_and_it_recovers_by_itself(
    tmp_path, enable_wal
):
    b = PersistingBackend(
        bucket_id=0,
        storage_path=str(tmp_path),
        enable_wal=enable_wal,
        wal_sync_interval=0,
        flush_threshold=10,
        max_unflushed_bytes=4096,
        put_timeout=0.3,
    )
    assert b._bucket.options()["max_unflushed_bytes"] == 4096
    await b.put_batch(_batch(0))
    await b.flush()
    # the place of the dataset's transaction files is taken: every commit fails
    txns = tmp_path / "data.lance" / "_transactions"
    aside = tmp_path / "_transactions.aside"
    os.rename(txns, aside)
    txns.write_bytes(b"not a directory")

    acked = 5
    with pytest.raises(StoreUnavailableError) as refused:
        while acked < 10_000:
            await b.put_batch(_batch(acked))
            acked += 5
    err = refused.value
    assert isinstance(err, StorageError) and isinstance(err, TimeoutError)
    for part in ("max_unflushed_bytes = 4096", str(tmp_path), "failed for"):
        assert part in str(err), str(err)
    assert acked > 10
    stats = await b.stats()
    assert stats["total_count"] == acked, "nothing of the refused batch is stored"
    assert stats["last_flush_error"] and stats["unflushed_bytes"] <= 4096
    assert await b.get(limit=acked, offset=5) == [r for s in range(5, acked, 5) for r in _batch(s)]

    # the store is back: no call, the bucket commits by itself
    txns.unlink()
    os.rename(aside, txns)
    deadline = time.monotonic() + 30
    while True:
        stats = await b.stats()
        if stats["persisted_count"] == acked and "last_flush_error" not in stats:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.05)
    await b.put_batch(_batch(acked))
    await b.close()
    again = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=enable_wal)
    assert await again.get(limit=acked + 5) == [r for s in range(0, acked + 5, 5) for r in _batch(s)]
    await again.close()

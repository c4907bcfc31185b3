"""Two Pulsing queues given one `storage_path`: Pulsing 0.1.2 puts bucket i of both at
`{storage_path}/bucket_i`, so the second topic's backend finds the bucket held by the
first. Refusing is right; the reason reaches the user on stderr (logger `persisting`),
although Pulsing swallows the constructor's exception."""

from __future__ import annotations

import pytest
from conftest import run_python

from persisting.errors import BucketLockedError
from persisting.queue import PersistingBackend

TWO_TOPICS = """
import asyncio, sys
import pulsing as pul
import pulsing.streaming as pq
import persisting as pst

async def main(path):
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    a = await pq.write_queue(system, "orders", backend="persisting", storage_path=path, num_buckets=1)
    await a.put({"id": "1"})
    b = await pq.write_queue(system, "payments", backend="persisting", storage_path=path, num_buckets=1)
    try:
        await asyncio.wait_for(b.put({"id": "2"}), 30)
        print("SECOND PUT STORED")
    except Exception as e:
        print("SECOND PUT FAILED:", type(e).__name__)
    await system.shutdown()
    await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1]))
"""


def test_two_queues_sharing_a_storage_path_say_why_through_pulsing(tmp_path):
    r = run_python(TWO_TOPICS, str(tmp_path / "shared"))
    assert "SECOND PUT FAILED" in r.stdout, r.stdout + r.stderr
    assert "two queues share this directory" in r.stderr, r.stderr
    assert "own storage_path" in r.stderr, r.stderr


async def test_the_same_bucket_opened_twice_in_one_process_names_the_holder(tmp_path):
    path = str(tmp_path / "bucket_0")
    first = PersistingBackend(bucket_id=0, storage_path=path)
    try:
        with pytest.raises(BucketLockedError, match="already open by PersistingBackend"):
            PersistingBackend(bucket_id=0, storage_path=path)
    finally:
        await first.close()
    # once closed, the bucket opens again
    again = PersistingBackend(bucket_id=0, storage_path=path)
    await again.close()


async def test_a_file_uri_of_an_open_bucket_names_the_holder_too(tmp_path):
    path = tmp_path / "bucket_0"
    first = PersistingBackend(bucket_id=0, storage_path=str(path))
    try:
        # the storage layer opens a file:// URI as its directory: the same bucket
        with pytest.raises(BucketLockedError, match="already open by PersistingBackend"):
            PersistingBackend(bucket_id=0, storage_path=path.as_uri())
    finally:
        await first.close()

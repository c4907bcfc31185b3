"""The API reference's three usage examples, runnable, with Pulsing 0.1.2's import
path (`pulsing.streaming`; the reference writes 0.1.0's `pul.queue`).

    python crates/python/examples/seed_examples.py [DIR]

Writes under DIR (default: a new temporary directory) and prints what it reads.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

import pulsing as pul
import pulsing.streaming as pq

import persisting as pst


async def main(root: str) -> None:
    system = await pul.actor_system()

    # Basic usage: LanceBackend
    pq.register_backend("lance", pst.queue.LanceBackend)
    writer = await pq.write_queue(
        system, topic="example", backend="lance", storage_path=f"{root}/queues"
    )
    await writer.put({"id": "1", "value": 42})
    await writer.flush()
    reader = await pq.read_queue(system, "example")
    records = await reader.get(limit=10)
    print("basic:", records)

    # With the WAL: PersistingBackend (no storage_path: Pulsing's default layout,
    # ./queue_storage/{topic}/bucket_{id}, here under DIR)
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    writer = await pq.write_queue(
        system,
        topic="durable",
        backend="persisting",
        storage_path=f"{root}/durable",
        backend_options={"enable_wal": True, "wal_sync_interval": 0.1},
    )
    for i in range(5):
        await writer.put({"id": str(i), "value": i * i})
    print("durable: acknowledged 5 records (in the WAL, not yet flushed)")

    # Streaming: a blocking read through Pulsing waits for the next put
    bucket = writer.queue.get_bucket_id("late")
    reader = await pq.read_queue(system, "durable", bucket_id=bucket)
    await reader.get(limit=100)  # catch up
    waiting = asyncio.create_task(reader.get(limit=1, wait=True, timeout=10))
    await asyncio.sleep(0.2)
    await writer.put({"id": "late", "value": -1})
    print("stream: woke with", await waiting)

    await system.shutdown()
    await asyncio.sleep(0.2)  # Pulsing 0.1.2 can crash at exit right after shutdown()


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="persisting-example-")
    print("data under", root)
    asyncio.run(main(root))

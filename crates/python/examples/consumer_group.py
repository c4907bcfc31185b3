"""A Pulsing reader that resumes where its consumer group committed.

Writes 100 records, reads 40 of them in group "trainer" and commits, then opens a
new reader (as a restarted process would) that resumes at record 40.

    python crates/python/examples/consumer_group.py [DIR]
"""

import asyncio
import sys
import tempfile

import pulsing as pul
import pulsing.streaming as pq

import persisting as pst


async def main(path: str) -> None:
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    options = {"enable_wal": True, "wal_sync_interval": 0}
    writer = await pq.write_queue(
        system, "events", backend="persisting", storage_path=path, backend_options=options
    )
    for i in range(100):
        await writer.put({"id": f"e{i}", "n": i})

    reader = await pq.read_queue(
        system, "events", backend="persisting", storage_path=path, backend_options=options
    )
    group = await pst.queue.resume(reader, "trainer")  # added line 1
    batch = await reader.get(limit=40)
    print("first reader processed", len(batch), "records")
    await group.commit()  # added line 2: durable when it returns

    again = await pq.read_queue(
        system, "events", backend="persisting", storage_path=path, backend_options=options
    )
    group = await pst.queue.resume(again, "trainer")
    rest = await again.get(limit=1000)
    await group.commit()
    print("restarted reader resumed and read", len(rest), "records")
    assert len(batch) + len(rest) == 100
    for bucket in range(4):
        print(f"bucket {bucket}:", await pst.queue.Groups(f"{path}/bucket_{bucket}").list())
    await system.shutdown()
    await asyncio.sleep(0.2)  # Pulsing 0.1.2 can crash at exit right after shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()))

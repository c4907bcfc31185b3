"""Consumer groups from Python: the backends' offset methods, the standalone groups of
a bucket, and Pulsing 0.1.2 readers resuming after SIGKILL with the two-line helper
(`persisting.queue.resume`)."""

from __future__ import annotations

import json
import signal

import pytest
from conftest import run_python, spawn_python

import persisting as pst
from persisting.errors import InvalidOptionError, StorageError
from persisting.queue import PersistingBackend


async def test_backend_commit_seek_delete_and_groups(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path / "b"), enable_wal=True)
    try:
        await b.put_batch([{"id": str(i), "n": i} for i in range(10)])
        assert await b.committed_offset("etl") is None
        assert await b.commit_offset("etl", 4) == 4
        with pytest.raises(StorageError, match="committed offset 4"):
            await b.commit_offset("etl", 3)
        with pytest.raises(StorageError, match="its end is 10"):
            await b.commit_offset("etl", 11)
        with pytest.raises(InvalidOptionError, match="invalid consumer group name"):
            await b.commit_offset("../x", 1)
        assert await b.seek_group("etl", 1) == 1
        assert await b.groups() == [{"group": "etl", "committed": 1, "end": 10, "lag": 9}]
        assert await b.delete_group("etl") is True
        assert await b.groups() == []
    finally:
        await b.close()


WRITE = """
import asyncio, sys
import pulsing as pul
import pulsing.streaming as pq
import persisting as pst

async def main(path):
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    writer = await pq.write_queue(system, "q", backend="persisting", storage_path=path,
        num_buckets=2, backend_options={"enable_wal": True, "wal_sync_interval": 0})
    for i in range(0, 400, 50):
        for k in range(i, i + 50):
            await writer.put({"id": f"r{k}", "n": k})
    await writer.flush()
    await system.shutdown()
    await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1]))
"""

# a consumer: prints each record it processed, and COMMITTED after each commit
READ = """
import asyncio, json, sys
import pulsing as pul
import pulsing.streaming as pq
import persisting as pst

async def main(path, stop_after):
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    reader = await pq.read_queue(system, "q", backend="persisting", storage_path=path,
        num_buckets=2, backend_options={"enable_wal": True})
    group = await pst.queue.resume(reader, "trainer")          # added line 1
    done = 0
    while True:
        batch = await reader.get(limit=30)
        if not batch:
            break
        for r in batch:
            print(json.dumps(r["n"]), flush=True)
        done += len(batch)
        await group.commit()                                   # added line 2
        print("COMMITTED", flush=True)
        if done >= stop_after:
            await asyncio.sleep(60)   # killed here, or midway through a batch
    print("END", flush=True)
    await system.shutdown()
    await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_a_pulsing_reader_killed_resumes_from_its_commit(tmp_path):
    path = str(tmp_path / "q")
    w = run_python(WRITE, path)
    assert w.returncode == 0, w.stderr

    # read about half, commit, read a little more without committing, SIGKILL
    p = spawn_python(READ, path, "200")
    lines = []
    committed_upto = 0
    for line in p.stdout:
        line = line.strip()
        lines.append(line)
        if line == "COMMITTED":
            committed_upto = len([x for x in lines if x not in ("COMMITTED", "END")])
            if committed_upto >= 200:
                break
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = [json.loads(x) for x in lines if x not in ("COMMITTED", "END")]
    assert committed_upto >= 200 and len(first) >= committed_upto

    r = run_python(READ, path, "100000")
    assert r.returncode == 0, r.stderr
    rest = [json.loads(x) for x in r.stdout.splitlines() if x not in ("COMMITTED", "END")]
    assert r.stdout.strip().endswith("END")
    # every record read at least once, and none read after the last commit twice...
    assert sorted(set(first) | set(rest)) == list(range(400))
    # ...the restart began exactly at the committed offsets: nothing committed is
    # read again, and the only records read twice are those read after the commit
    again = set(first) & set(rest)
    assert again == set(first[committed_upto:])
    assert len(rest) == len(set(rest))

    # the groups: lag 0 everywhere, seen by a handle that holds no writer lock
    async def lags():
        out = []
        for b in range(2):
            g = pst.queue.Groups(f"{path}/bucket_{b}")
            out.extend(await g.list())
        return out

    import asyncio

    got = asyncio.run(lags())
    assert [x["lag"] for x in got] == [0, 0]
    assert sum(x["committed"] for x in got) == 400


async def test_resume_refuses_a_reader_that_is_not_pulsings(tmp_path):
    with pytest.raises(TypeError, match="not a Pulsing QueueReader"):
        await pst.queue.resume(object(), "g", str(tmp_path))


def test_pylance_opens_a_bucket_with_groups_as_before(tmp_path):
    import asyncio

    import lance

    path = str(tmp_path / "b")

    async def write():
        b = PersistingBackend(bucket_id=0, storage_path=path)
        await b.put_batch([{"id": str(i), "n": i} for i in range(5)])
        await b.flush()
        await b.commit_offset("g", 3)
        await b.close()

    asyncio.run(write())
    ds = lance.dataset(f"{path}/data.lance")
    assert ds.count_rows() == 5

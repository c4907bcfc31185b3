"""Across processes: a topic written in one interpreter is read whole by a fresh one;
records whose awaited put returned (WAL, `wal_sync_interval=0`) survive `os._exit`
and SIGKILL, each exactly once, at its offset."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import run_python, spawn_python

from persisting.queue import PersistingBackend

WRITE_TOPIC = """
import asyncio, sys
import pulsing as pul
import pulsing.streaming as pq
import persisting as pst

async def main(path):
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    writer = await pq.write_queue(system, "events", backend="persisting",
        storage_path=path, num_buckets=3,
        backend_options={"enable_wal": True, "wal_sync_interval": 0, "compression": "zstd"})
    for i in range(300):
        await writer.put({"id": f"e{i}", "n": i, "tags": ["a", str(i)], "meta": {"ok": i % 2 == 0}})
    await writer.flush()
    for i in range(300, 350):  # acknowledged, never flushed: only in the WAL
        await writer.put({"id": f"e{i}", "n": i, "tags": [], "meta": {"ok": True}})
    await system.shutdown()
    await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1]))
"""

READ_TOPIC = """
import asyncio, json, sys
import pulsing as pul
import pulsing.streaming as pq
import persisting as pst

async def main(path):
    system = await pul.actor_system()
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    out = []
    for rank in range(2):
        reader = await pq.read_queue(system, "events", rank=rank, world_size=2,
            num_buckets=3, backend="persisting", storage_path=path,
            backend_options={"enable_wal": True})
        while True:
            got = await reader.get(limit=64)
            if not got:
                break
            out.extend(got)
    print(json.dumps(out))
    await system.shutdown()
    await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1]))
"""


def test_a_topic_written_in_one_process_is_read_in_a_fresh_one(tmp_path):
    path = str(tmp_path / "events")
    w = run_python(WRITE_TOPIC, path)
    assert w.returncode == 0, w.stderr
    r = run_python(READ_TOPIC, path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(x["n"] for x in got) == list(range(350))
    by_n = {x["n"]: x for x in got}
    assert by_n[7] == {"id": "e7", "n": 7, "tags": ["a", "7"], "meta": {"ok": False}}
    assert by_n[320] == {"id": "e320", "n": 320, "tags": [], "meta": {"ok": True}}


ACKED_PUTS = """
import asyncio, os, sys
from persisting.queue import PersistingBackend

async def main(path, how):
    b = PersistingBackend(bucket_id=0, storage_path=path, enable_wal=True,
                          wal_sync_interval=0, compression="lz4", flush_threshold=97)
    i = 0
    while True:
        if i % 5 == 4:
            await b.put_batch([{"i": i + k, "s": "x" * ((i + k) % 50)} for k in range(3)])
            i += 3
        else:
            await b.put({"i": i, "s": "x" * (i % 50)})
            i += 1
        print(i, flush=True)  # every record below i is acknowledged
        if how == "exit" and i >= 400:
            os._exit(0)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def check_acknowledged(path: str, acked: int) -> None:
    import asyncio

    async def read_all():
        b = PersistingBackend(bucket_id=0, storage_path=path, enable_wal=True)
        try:
            return await b.get()
        finally:
            await b.close()

    got = asyncio.run(read_all())
    n = [r["i"] for r in got]
    # each acknowledged record exactly once, at its offset; a record in flight when
    # the process died may be there too, after them
    assert n[:acked] == list(range(acked)), "an acknowledged record is missing or moved"
    assert n == list(range(len(n))), "a record is duplicated or out of place"
    assert all(r["s"] == "x" * (r["i"] % 50) for r in got), "a record changed"


def test_awaited_wal_puts_survive_os_exit(tmp_path):
    path = str(tmp_path / "b")
    p = run_python(ACKED_PUTS, path, "exit")
    assert p.returncode == 0, p.stderr
    acked = int(p.stdout.split()[-1])
    assert acked >= 400
    check_acknowledged(path, acked)


def test_awaited_wal_puts_survive_sigkill(tmp_path):
    for round_ in range(3):
        path = str(tmp_path / f"b{round_}")
        child = spawn_python(ACKED_PUTS, path, "kill")
        acked = 0
        deadline = time.monotonic() + 60
        assert child.stdout is not None
        while acked < 150 + 100 * round_ and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # what the child printed after our last read is acknowledged too
        rest = child.stdout.read().split()
        if rest:
            acked = int(rest[-1])
        assert acked >= 150, child.stderr.read() if child.stderr else ""
        check_acknowledged(path, acked)


EXIT_RIGHT_AFTER_PUTS = """
import asyncio, sys
from persisting.queue import LanceBackend

async def main(path):
    b = LanceBackend(bucket_id=0, storage_path=path, flush_threshold=50)
    for i in range(20):
        await b.put_batch([{"i": i * 10 + k, "s": "x" * k} for k in range(10)])
    await b.close()

asyncio.run(main(sys.argv[1]))
"""


def test_the_interpreter_exits_cleanly_right_after_awaited_calls(tmp_path):
    # a storage thread that asked for the GIL while the interpreter finalized used to
    # abort the process (SIGABRT) in about one exit of twelve
    for n in range(12):
        out = run_python(EXIT_RIGHT_AFTER_PUTS, str(tmp_path / f"b{n}"))
        assert out.returncode == 0, (n, out.returncode, out.stderr[-2000:])

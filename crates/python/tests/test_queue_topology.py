"""Several writers and readers over several buckets and ranks through Pulsing, the
same topic read by the Rust command line, and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request

import pulsing.streaming as pq
import pytest

import persisting as pst


async def test_writers_and_ranked_readers_over_buckets(system, tmp_path):
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    storage = str(tmp_path / "jobs")
    opts = {"enable_wal": True, "wal_sync_interval": 0.05, "flush_threshold": 64}
    writers = [
        await pq.write_queue(system, "jobs", backend="persisting", storage_path=storage,
                             num_buckets=4, backend_options=opts)
        for _ in range(3)
    ]

    async def write(w, k):
        # writer k writes records k, k+3, ...: chunks of 4, as one list put or as
        # single puts in turn
        mine = list(range(k, 240, 3))
        for c in range(0, len(mine), 4):
            chunk = [{"id": f"j{i}", "i": i} for i in mine[c : c + 4]]
            if (c // 4) % 2 == 0:
                await w.put(chunk)
            else:
                for r in chunk:
                    await w.put(r)

    # readers drain while writers write
    async def drain(rank):
        reader = await pq.read_queue(system, "jobs", rank=rank, world_size=2, num_buckets=4,
                                     backend="persisting", storage_path=storage,
                                     backend_options=opts)
        got = []
        idle = 0
        while idle < 20:
            batch = await reader.get(limit=50)
            if batch:
                got.extend(batch)
                idle = 0
            else:
                idle += 1
                await asyncio.sleep(0.05)
        return got

    results = await asyncio.gather(
        *(write(w, k) for k, w in enumerate(writers)), drain(0), drain(1)
    )
    r0, r1 = results[-2], results[-1]
    ids = sorted(r["i"] for r in r0 + r1)
    assert len(ids) == len(set(ids)), "a record was read twice"
    written = await writers[0].queue.stats()
    total = sum(b["total_count"] for b in written["buckets"].values())
    assert ids == list(range(240)) and total == 240
    # each rank read only its buckets: 0 and 2, or 1 and 3
    q = writers[0].queue
    assert {q.get_bucket_id(r["id"]) % 2 for r in r0} <= {0}
    assert {q.get_bucket_id(r["id"]) % 2 for r in r1} <= {1}


@pytest.mark.skipif(not os.environ.get("PERSISTING_CLI"), reason="PERSISTING_CLI not set")
async def test_a_topic_written_through_pulsing_is_read_by_the_rust_cli(system, tmp_path):
    pq.register_backend("persisting", pst.queue.PersistingBackend)
    storage = tmp_path / "shared"
    writer = await pq.write_queue(system, "shared", backend="persisting",
                                  storage_path=str(storage), num_buckets=2)
    await writer.put([{"id": f"k{i}", "n": i} for i in range(40)])
    await writer.flush()
    # {storage_path}/bucket_{id}: the CLI takes the topic's directory
    out = subprocess.run(
        [os.environ["PERSISTING_CLI"], "get", str(storage), "--offset", "0", "--limit", "1000"],
        capture_output=True, text=True, timeout=120,
    )
    # the buckets are held by this process's backends: the CLI reads Lance's commits
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert sorted(r["n"] for r in got) == list(range(40))


async def test_metrics_are_recorded_served_and_read(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    b = pst.PersistingBackend(bucket_id=5, storage_path=str(tmp_path / "m" / "bucket_5"),
                              enable_wal=True, wal_sync_interval=0, enable_metrics=True,
                              metrics_addr=addr)
    await b.put_batch([{"i": i} for i in range(10)])
    await b.flush()
    m = b.get_metrics()
    assert m["persisting_records_total"] == 10
    assert m["persisting_flushes_total"] == 1
    assert m["persisting_wal_fsyncs_total"] >= 1
    assert m["persisting_flush_duration_seconds_count"] == 1
    assert b.metrics_addr == addr
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    )
    assert 'persisting_records_total{topic="m",bucket="5"} 10' in body
    # metrics off: nothing recorded for that bucket
    quiet = pst.PersistingBackend(bucket_id=6, storage_path=str(tmp_path / "q"))
    await quiet.put({"i": 1})
    assert quiet.get_metrics() == {}

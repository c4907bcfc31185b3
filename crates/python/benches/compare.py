"""The Python package against its baselines, each pair measured in this process.

Prints one `BENCH-ROW|group|measurement|ours|baseline|unit|ratio|floor` line per
comparison (the format `cargo xtask bench` gathers) and a readable line beside it.
Needs the package installed from a release build (`cargo xtask bench` does it).

    python benches/compare.py [--records N] [--only ingest,read,parts,convert,pulsing,rss]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import lance
import pyarrow as pa

import persisting
from persisting import _native
from persisting.queue import LanceBackend, PersistingBackend
from workload import BATCH, ingest_ours, make_batch

def row(group, measurement, ours, baseline, unit, floor):
    ratio = ours / baseline if baseline else float("inf")
    if floor.startswith("<="):
        ratio = ours / baseline if baseline else 0.0
    print(f"BENCH-ROW|{group}|{measurement}|{ours:.6g}|{baseline:.6g}|{unit}|{ratio:.4g}|{floor}", flush=True)
    print(f"  {group}: {measurement}: {ours:,.0f} vs {baseline:,.0f} {unit} = {ratio:.2f}x (floor {floor})", flush=True)


def ingest_pylance(path: str, records: int) -> float:
    start = time.perf_counter()
    for s in range(0, records, BATCH):
        table = pa.Table.from_pylist(make_batch(s, BATCH))
        lance.write_dataset(table, path, mode="append")
    return records / (time.perf_counter() - start)


async def bench_ingest(tmp: str, records: int) -> tuple[str, str]:
    """Alternated whole runs (ours, pylance, ours, pylance); the best of each side."""
    ours, theirs = [], []
    for run in range(2):
        a, b = os.path.join(tmp, f"ours{run}"), os.path.join(tmp, f"pylance{run}.lance")
        ours.append(await ingest_ours(a, records))
        gc.collect()
        theirs.append(ingest_pylance(b, records))
        gc.collect()
    row("python", f"put_batch of {BATCH:,}-dict batches, {records:,} records, vs pylance write_dataset(append)",
        max(ours), max(theirs), "records/s", ">=1.5")
    return os.path.join(tmp, "ours0"), os.path.join(tmp, "pylance0.lance")


async def bench_read(ours_path: str, pylance_path: str, records: int) -> None:
    b = LanceBackend(bucket_id=0, storage_path=ours_path)
    ds = lance.dataset(pylance_path)
    rng = random.Random(7)
    rounds, per_round = 7, 200
    ours, theirs = [], []
    # warm both (first reads open files)
    await b.get(100, 0)
    ds.to_table(offset=0, limit=100).to_pylist()
    for _ in range(rounds):
        offsets = [rng.randrange(0, records - 100) for _ in range(per_round)]
        start = time.perf_counter()
        for o in offsets:
            got = await b.get(100, o)
        ours.append(per_round / (time.perf_counter() - start))
        assert got[0]["seq"] == offsets[-1]
        start = time.perf_counter()
        for o in offsets:
            got = ds.to_table(offset=o, limit=100).to_pylist()
        theirs.append(per_round / (time.perf_counter() - start))
        assert got[0]["seq"] == offsets[-1]
    # the round trip to the storage thread alone (a read past the end reads nothing):
    # the part of every call that an off-the-event-loop design pays and pylance's
    # blocking calls do not; asyncio's own way of leaving the loop is the baseline
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        await b._bucket.get(records * 10, 0)
    ours_trip = n / (time.perf_counter() - start)
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    await loop.run_in_executor(pool, int)
    start = time.perf_counter()
    for _ in range(n):
        await loop.run_in_executor(pool, int)
    theirs_trip = n / (time.perf_counter() - start)
    pool.shutdown()
    await b.close()
    row("python", "an empty await of the storage runtime vs asyncio run_in_executor of a no-op (the off-loop round trip in every call)",
        ours_trip, theirs_trip, "calls/s", "-")
    row("python", f"get(100, random offset) on {records:,} rows vs pylance to_table(offset, limit).to_pylist() (median of {rounds} alternated rounds)",
        statistics.median(ours), statistics.median(theirs), "reads/s", ">=2")


async def bench_ingest_parts(tmp: str, records: int) -> None:
    """Where an ingest's time goes, per batch, both sides in this process: making the
    dicts (the same for both), our put (conversion, buffering) and our flush alone (a
    durable Lance commit: Lance's write, then fsyncs), pylance's from_pylist and its
    write alone (no fsync). No writer that overlaps its conversion with its commit can
    beat max(make + put, flush) per batch: that bound, against pylance's make +
    from_pylist + write, is the most the ingest row can reach here."""
    b = LanceBackend(bucket_id=0, storage_path=os.path.join(tmp, "parts"),
                     flush_threshold=10**9)
    path = os.path.join(tmp, "parts-pylance.lance")
    make = put = flush = frm = write = 0.0
    batches = records // BATCH
    for s in range(0, batches * BATCH, BATCH):
        t0 = time.perf_counter()
        batch = make_batch(s, BATCH)
        t1 = time.perf_counter()
        await b.put_batch(batch)
        t2 = time.perf_counter()
        await b.flush()
        t3 = time.perf_counter()
        table = pa.Table.from_pylist(batch)
        t4 = time.perf_counter()
        lance.write_dataset(table, path, mode="append")
        t5 = time.perf_counter()
        make, put, flush = make + t1 - t0, put + t2 - t1, flush + t3 - t2
        frm, write = frm + t4 - t3, write + t5 - t4
    await b.close()
    ms = lambda x: x / batches * 1e3  # noqa: E731
    print(f"  per batch of {BATCH:,}: make dicts {ms(make):.2f} ms; ours: put {ms(put):.2f} ms, "
          f"flush (durable commit) {ms(flush):.2f} ms; pylance: from_pylist {ms(frm):.2f} ms, "
          f"write {ms(write):.2f} ms", flush=True)
    bound = BATCH / max((make + put) / batches, flush / batches)
    theirs = BATCH / ((make + frm + write) / batches)
    row("python", "ingest ceiling: records/s of max(make + our put, our durable flush) per batch, vs pylance make + from_pylist + write (no floor: the bound on the ingest row)",
        bound, theirs, "records/s", "-")


def bench_convert(n: int = 100_000) -> None:
    dicts = make_batch(0, n)
    ours, theirs = [], []
    for _ in range(5):
        start = time.perf_counter()
        back = _native.round_trip(dicts)
        ours.append(n / (time.perf_counter() - start))
        assert back[-1] == dicts[-1]
        start = time.perf_counter()
        back = pa.Table.from_pylist(dicts).to_pylist()
        theirs.append(n / (time.perf_counter() - start))
        del back
    row("python", f"convert {n:,} dicts to records and back vs pa.Table.from_pylist + to_pylist (median of 5)",
        statistics.median(ours), statistics.median(theirs), "records/s", ">=1")


async def bench_pulsing(tmp: str, puts: int = 10_000, drain: int = 100_000) -> None:
    import pulsing as pul
    import pulsing.streaming as pq

    system = await pul.actor_system()
    pq.register_backend("persisting", PersistingBackend)
    opts = {"enable_wal": True, "wal_sync_interval": 0.1}
    put_rate, drain_rate = {}, {}
    for name, backend, storage, options in [
        ("memory", "memory", None, None),
        ("persisting", "persisting", os.path.join(tmp, "pulsing-put"), opts),
    ]:
        writer = await pq.write_queue(system, f"put-{name}", backend=backend,
                                      storage_path=storage, backend_options=options)
        start = time.perf_counter()
        for i in range(puts):
            await writer.put({"id": f"k{i}", "seq": i, "text": "hello"})
        put_rate[name] = puts / (time.perf_counter() - start)

        writer = await pq.write_queue(system, f"drain-{name}", backend=backend, num_buckets=1,
                                      storage_path=storage and storage + "-drain",
                                      backend_options=options)
        ref = await writer.queue._ensure_bucket(0)
        for s in range(0, drain, 5000):
            await ref.put_batch(make_batch(s, 5000))
        reader = await pq.read_queue(system, f"drain-{name}", bucket_id=0, num_buckets=1,
                                     backend=backend, storage_path=storage and storage + "-drain",
                                     backend_options=options)
        got = 0
        start = time.perf_counter()
        while got < drain:
            batch = await reader.get(limit=5000)
            assert batch, "the reader ran dry before draining"
            got += len(batch)
        drain_rate[name] = got / (time.perf_counter() - start)
    await system.shutdown()
    await asyncio.sleep(0.2)
    row("python", f"through Pulsing: {puts:,} writer.put, PersistingBackend (WAL, 0.1 s) vs Pulsing's memory backend",
        put_rate["persisting"], put_rate["memory"], "puts/s", ">=0.8")
    row("python", f"through Pulsing: drain {drain:,} records with reader.get(limit=5000), PersistingBackend vs memory",
        drain_rate["persisting"], drain_rate["memory"], "records/s", ">=0.8")


# imports the package and the workload only (no pyarrow, no pylance). The peak is
# VmHWM, this process's own high-water mark: ru_maxrss of a child can carry its
# parent's peak over fork and exec, which made this run report the benchmark's.
RSS_CHILD = """
import asyncio, sys
sys.path[:0] = sys.argv[3:]
from workload import ingest_ours
asyncio.run(ingest_ours(sys.argv[1], int(sys.argv[2])))
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]))
"""


def bench_rss(tmp: str, records: int) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, os.path.join(tmp, "rss"), str(records), here],
        capture_output=True, text=True, check=True,
    )
    peak_mib = int(out.stdout.split()[-1]) / 1024
    row("python", f"peak RSS of the Python process ingesting {records:,} records (limit 512 MiB)",
        peak_mib, 512.0, "MiB", "<=1")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--only", default="ingest,read,parts,convert,pulsing,rss")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"persisting {persisting.__version__} from {os.path.dirname(persisting.__file__)}; "
          f"pylance {lance.__version__}; pyarrow {pa.__version__}", flush=True)
    tmp = tempfile.mkdtemp(prefix="persisting-pybench-")
    try:
        if "ingest" in only or "read" in only:
            ours_path, pylance_path = await bench_ingest(tmp, args.records)
            if "read" in only:
                await bench_read(ours_path, pylance_path, args.records)
        if "parts" in only:
            await bench_ingest_parts(tmp, args.records)
        if "convert" in only:
            bench_convert()
        if "pulsing" in only:
            await bench_pulsing(tmp)
        if "rss" in only:
            bench_rss(tmp, args.records)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

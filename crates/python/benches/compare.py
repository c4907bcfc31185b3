"""The Python package against its baselines, each pair measured in this process.

Prints one `BENCH-ROW|group|measurement|ours|baseline|unit|ratio|floor` line per
comparison (the format `cargo xtask bench` gathers) and a readable line beside it.
Needs the package installed from a release build (`cargo xtask bench` does it).

    python benches/compare.py [--records N] [--only ingest,read,s3,parts,convert,pulsing,rss]
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


async def drain(b: LanceBackend, records: int) -> None:
    """Reads `records` records of `b` with get_stream, as a consumer draining it."""
    got = 0
    async for batch in b.get_stream(limit=records):
        got += len(batch)
    assert got == records, got


def pylance_drain(ds: "lance.LanceDataset", records: int) -> None:
    """Reads every record of `ds` into dicts the way pylance streams: batch by batch."""
    got = 0
    for rb in ds.to_batches():
        got += len(rb.to_pylist())
    assert got == records, got


async def bench_drain(ours_path: str, pylance_path: str, records: int) -> None:
    """A consumer draining the whole bucket with get_stream, against pylance's own
    streaming read of the same records turned into dicts (best of alternated runs)."""
    b = LanceBackend(bucket_id=0, storage_path=ours_path)
    ds = lance.dataset(pylance_path)
    ours, theirs = [], []
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        await drain(b, records)
        ours.append(records / (time.perf_counter() - start))
        gc.collect()
        start = time.perf_counter()
        pylance_drain(ds, records)
        theirs.append(records / (time.perf_counter() - start))
    await b.close()
    row("python", f"get_stream drain of {records:,} records vs pylance to_batches() + to_pylist() (best of 3 alternated)",
        max(ours), max(theirs), "records/s", ">=1.2")


async def bench_get_parts(ours_path: str, pylance_path: str, records: int, n: int = 5000) -> None:
    """Where a get(5000) spends its time, each part against its bound: the read
    (Lance, row checks, records; GIL released) against pylance reading the same rows
    as Arrow, and the conversion to dicts against Python building the same dicts
    itself from values it already holds. The rest of an awaited get is the hop
    between the event loop and the storage runtime."""
    b = LanceBackend(bucket_id=0, storage_path=ours_path)
    ds = lance.dataset(pylance_path)
    starts = list(range(0, min(records, 200_000) - n + 1, n))
    await b.get(n, 0)
    ds.to_table(offset=0, limit=n)
    whole, read, convert, arrow, literal, pylist = [], [], [], [], [], []
    for _ in range(3):
        gc.collect()
        t = time.perf_counter()
        for o in starts:
            got = await b.get(n, o)
        whole.append((time.perf_counter() - t) / len(starts))
        del got
        gc.collect()
        r = c = 0.0
        for o in starts:
            got, rs, cs = b._bucket._get_timed(o, n)
            r, c = r + rs, c + cs
        read.append(r / len(starts))
        convert.append(c / len(starts))
        keys = list(got[0])
        rows = [tuple(d.values()) for d in got]
        del got
        gc.collect()
        t = time.perf_counter()
        for o in starts:
            ds.to_table(offset=o, limit=n)
        arrow.append((time.perf_counter() - t) / len(starts))
        table = ds.to_table(offset=starts[-1], limit=n)
        t = time.perf_counter()
        for _ in starts:
            table.to_pylist()
        pylist.append((time.perf_counter() - t) / len(starts))
        del table
        k0, k1, k2, k3, k4 = keys
        t = time.perf_counter()
        for _ in starts:
            built = [{k0: a, k1: b_, k2: c_, k3: d, k4: e} for a, b_, c_, d, e in rows]
        literal.append((time.perf_counter() - t) / len(starts))
        del built
    await b.close()
    w, r, c = min(whole), min(read), min(convert)
    print(f"  get({n:,}) on {records:,} rows: {w * 1e3:.2f} ms = read {r * 1e3:.2f} + conversion "
          f"{c * 1e3:.2f} + the rest {(w - r - c) * 1e3:.2f} (the hop, and freeing the result before; "
          f"best of 3 passes); pyarrow's to_pylist of {n:,} rows: {min(pylist) * 1e3:.2f} ms", flush=True)
    row("python", f"get({n:,}) part 1, the read (Lance, row checks; GIL released) vs pylance to_table(offset, {n:,}) of the same rows (Arrow only)",
        n / r, n / min(arrow), "records/s", "-")
    row("python", f"get({n:,}) part 2, checked rows to dicts (GIL held) vs Python building the same {n:,} dicts from values it holds (dict displays)",
        n / c, n / min(literal), "records/s", "-")


async def bench_s3_drain(tmp: str, records: int) -> None:
    """A consumer on s3:// draining a bucket with get_stream against pylance scanning
    the same dataset on the same server into dicts (to_batches() + to_pylist())."""
    root = os.environ.get("PERSISTING_TEST_S3")
    if not root:
        print("  python: s3 drain skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)", flush=True)
        return
    uri = f"{root.rstrip('/')}/pybench-{os.getpid()}-{int(time.time())}/bucket_0"
    local = os.path.join(tmp, "s3-local")
    w = LanceBackend(bucket_id=0, storage_path=uri, wal_dir=local)
    for s in range(0, records, BATCH):
        await w.put_batch(make_batch(s, BATCH))
    await w.flush()
    await w.close()
    keys = ["AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
    opts = {k.lower(): os.environ[k] for k in keys if k in os.environ}
    ours, theirs = [], []
    for _ in range(2):
        gc.collect()
        start = time.perf_counter()
        b = LanceBackend(bucket_id=0, storage_path=uri, wal_dir=local)
        await drain(b, records)
        ours.append(records / (time.perf_counter() - start))
        await b.close()
        gc.collect()
        start = time.perf_counter()
        pylance_drain(lance.dataset(f"{uri}/data.lance", storage_options=opts), records)
        theirs.append(records / (time.perf_counter() - start))
    row("python", f"on s3://: open + get_stream drain of {records:,} records vs pylance open + to_batches() + to_pylist() of the same dataset (best of 2 alternated)",
        max(ours), max(theirs), "records/s", ">=1")


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
        drain_rate["persisting"], drain_rate["memory"], "records/s", ">=0.9")


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
    ap.add_argument("--only", default="ingest,read,s3,parts,convert,pulsing,rss")
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
                await bench_get_parts(ours_path, pylance_path, args.records)
                await bench_drain(ours_path, pylance_path, args.records)
        if "s3" in only:
            await bench_s3_drain(tmp, args.records)
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

"""The workload of the Python benchmarks: records, and the ingest through the package
(importing nothing else, so the peak-RSS run measures the package alone)."""

from __future__ import annotations

import time

from persisting.queue import LanceBackend

BATCH = 10_000


def make_batch(start: int, n: int) -> list[dict]:
    return [
        {
            "id": f"evt-{i:09d}",
            "seq": i,
            "value": i * 0.5,
            "ok": i % 3 == 0,
            "text": f"payload {i} " + "x" * (i % 40),
        }
        for i in range(start, start + n)
    ]


async def ingest_ours(path: str, records: int) -> float:
    b = LanceBackend(bucket_id=0, storage_path=path)
    start = time.perf_counter()
    for s in range(0, records, BATCH):
        await b.put_batch(make_batch(s, BATCH))
    await b.flush()
    took = time.perf_counter() - start
    await b.close()
    return records / took



import sys, time, json
import lance, pyarrow as pa
mode = sys.argv[1]
if mode == "ingest":
    path, n = sys.argv[2], int(sys.argv[3])
    spent = 0.0
    for start in range(0, n, 10000):
        r = range(start, min(start + 10000, n))
        text = lambda i: (("record %d " % i) * 20)[:100]
        t = pa.table({
            "id": ["id-%012d" % i for i in r],
            "user": ["user-%d" % (i % 5003) for i in r],
            "n": pa.array(list(r), pa.int64()),
            "score": [i * 0.25 for i in r],
            "text": [text(i) for i in r],
        })
        t0 = time.perf_counter()
        lance.write_dataset(t, path, mode="append")
        spent += time.perf_counter() - t0
    print(json.dumps({"value": n / spent}))
else:
    # rounds of reads driven by the benchmark: a line "k seed" on stdin times k
    # reads at the offsets the benchmark's own xorshift gives for seed
    path = sys.argv[2]
    ds = lance.dataset(path)
    n = ds.count_rows()
    mask = (1 << 64) - 1
    for line in sys.stdin:
        k, seed = map(int, line.split())
        x, offs = seed | 1, []
        for _ in range(k):
            x ^= (x << 13) & mask
            x ^= x >> 7
            x ^= (x << 17) & mask
            offs.append(x % (n - 100))
        t0 = time.perf_counter()
        for o in offs:
            assert ds.to_table(offset=o, limit=100).num_rows == 100
        print(json.dumps({"value": (time.perf_counter() - t0) / k}), flush=True)

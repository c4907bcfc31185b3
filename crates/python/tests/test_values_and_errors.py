"""What a record may hold, and what happens to what it may not: every supported
value round-trips exactly (through the buffer, Lance and the WAL); anything else,
bad options and schema conflicts raise a clear exception and store nothing."""

from __future__ import annotations

import gc
import math

import pytest

from persisting import (
    InvalidOptionError,
    SchemaError,
    StorageError,
    WALError,
    _native,
)
from persisting.queue import LanceBackend, PersistingBackend

EDGE = {
    "none": None,
    "t": True,
    "f": False,
    "zero": 0,
    "min": -(2**63),
    "max": 2**63 - 1,
    "float": 1.5,
    "neg0": -0.0,
    "inf": math.inf,
    "ninf": -math.inf,
    "str": "naïve ☃ \U0001f600",
    "empty": "",
    "bytes": b"\x00\xff raw",
    "list": [1, "two", None, [3.0, {"k": b"v"}]],
    "nested": {"a": {"b": {"c": [True, False]}}},
    "empty_list": [],
    "empty_map": {},
}


def test_conversion_round_trips_exactly():
    out = _native.round_trip([EDGE, {"nan": math.nan}])
    assert out[0] == EDGE
    assert list(out[0]) == list(EDGE), "field order is kept"
    assert type(out[0]["t"]) is bool and type(out[0]["zero"]) is int
    assert math.copysign(1.0, out[0]["neg0"]) == -1.0
    assert math.isnan(out[1]["nan"])


def test_names_follow_each_record_whatever_the_shapes_of_its_neighbours():
    # field names are cached by position from one record to the next: records whose
    # fields move, vanish or nest must still get their own names, in their own order
    dicts = [
        {"a": 1, "b": 2},
        {"b": 3, "a": 4},
        {"a": 5},
        {"c": {"a": 6, "b": {"b": 7}}, "a": 8},
        {"a": 9, "b": 10},
        {},
        {"b": 11},
    ]
    out = _native.round_trip(dicts)
    assert out == dicts
    assert [list(d) for d in out] == [list(d) for d in dicts]
    assert list(out[3]["c"]) == ["a", "b"]


async def test_get_in_its_timed_parts_reads_what_get_reads(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))
    await b.put_batch([{"i": i, "s": str(i)} for i in range(50)])
    await b.flush()
    await b.put_batch([{"i": 50, "s": "50"}])
    got, read, convert = b._bucket._get_timed(40, 20)
    assert got == await b.get(20, 40)
    assert [r["i"] for r in got] == list(range(40, 51))
    assert read > 0 and convert > 0
    await b.close()


@pytest.mark.parametrize("wal", [False, True])
async def test_values_round_trip_through_buffer_lance_and_wal(tmp_path, wal):
    opts = dict(enable_wal=wal, wal_sync_interval=0, compression="zstd" if wal else None)
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), **opts)
    await b.put(EDGE)
    assert await b.get(1, 0) == [EDGE]  # from the buffer
    await b.put(EDGE)
    await b.flush()
    assert await b.get(2, 0) == [EDGE, EDGE]  # from Lance
    await b.put(EDGE)  # in the WAL (without one, only in the buffer)
    del b  # dropped without close() or flush(), as Pulsing leaves a backend
    gc.collect()
    again = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), **opts)
    got = await again.get()
    assert got == [EDGE] * (3 if wal else 2)


def _shaped(i: int) -> dict:
    """Records of many shapes over the same fields: absent fields, explicit None,
    another key order, nested values, and the common scalar types."""
    text = "x" * (i % 23)
    return [
        {"id": i, "s": text, "f": i / 4, "ok": i % 2 == 0},
        {"s": text, "id": i},
        {"id": i, "s": None},
        {"id": i, "l": [i, "a"], "m": {"k": text}},
        {"id": i},
        {"id": i, "s": f"{i}", "ok": False, "b": bytes([i % 256])},
    ][i % 6]


async def test_records_of_every_shape_read_back_with_their_own_keys_in_their_order(tmp_path):
    b = LanceBackend(bucket_id=0, storage_path=str(tmp_path))
    want = [_shaped(i) for i in range(600)]
    for k in range(0, 600, 100):
        await b.put_batch(want[k : k + 100])
        if k < 400:
            await b.flush()  # the last 200 stay in the buffer
    for offset, limit in [(0, 600), (0, 7), (95, 10), (390, 30), (550, 100)]:
        got = await b.get(limit, offset)
        assert [list(r.items()) for r in got] == [
            list(r.items()) for r in want[offset : offset + limit]
        ], (offset, limit)
    streamed = [r async for batch in b.get_stream(limit=600) for r in batch]
    assert [list(r.items()) for r in streamed] == [list(r.items()) for r in want]
    await b.close()


@pytest.mark.parametrize(
    "bad, kind, words",
    [
        ({"x": (1, 2)}, TypeError, ["record 1", "'x'", "tuple"]),
        ({"x": {1, 2}}, TypeError, ["'x'", "set"]),
        ({"x": object()}, TypeError, ["'x'", "object"]),
        ({"meta": {"tags": [1, 2, 2**64]}}, OverflowError, ["meta.tags[2]", "64 bits"]),
        ({1: "a"}, TypeError, ["field name", "int"]),
        ({"x": bytearray(b"a")}, TypeError, ["bytearray"]),
    ],
)
async def test_a_bad_value_refuses_the_whole_batch(tmp_path, bad, kind, words):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    await b.put({"x0": 1})
    with pytest.raises(kind) as e:
        await b.put_batch([{"ok": 1}, bad, {"ok": 2}])
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert b.total_count() == 1
    with pytest.raises(TypeError, match="must be a dict"):
        await b.put_batch([["not", "a", "dict"]])
    with pytest.raises(TypeError, match="list of dicts"):
        await b.put_batch({"a": 1})
    assert b.total_count() == 1
    await b.close()
    # nothing of the refused batches reached the WAL either
    again = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    assert await again.get() == [{"x0": 1}]


@pytest.mark.parametrize(
    "options, name",
    [
        ({"compression": "gzip"}, "compression"),
        ({"wal_sync_interval": -1}, "wal_sync_interval"),
        ({"wal_sync_interval": "soon"}, "wal_sync_interval"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_wal_size": 10}, "max_wal_size"),
        ({"enable_wal": "perhaps"}, "enable_wal"),
        ({"flush_threshold": -1}, "flush_threshold"),
        ({"flush_threshold": 2.5}, "flush_threshold"),
        ({"lease_term": 0.001}, "lease_term"),
        ({"target_rows_per_fragment": 31}, "target_rows_per_fragment"),
        ({"enable_wal": [True]}, "enable_wal"),
        ({"metrics_addr": "not an address", "enable_metrics": True}, "metrics_addr"),
        ({"metrics_addr": "127.0.0.1:0"}, "metrics_addr"),
    ],
)
def test_bad_options_raise_at_construction_naming_the_option(tmp_path, options, name):
    path = tmp_path / "b"
    with pytest.raises(InvalidOptionError) as e:
        PersistingBackend(bucket_id=0, storage_path=str(path), **options)
    assert name in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, StorageError)
    assert not (path / "wal").exists() and not (path / "data.lance").exists()


def test_bad_paths_and_ids(tmp_path):
    # data at a URI needs a local directory for its WAL and lock
    with pytest.raises(InvalidOptionError, match="wal_dir"):
        LanceBackend(bucket_id=0, storage_path="s3://bucket/queue")
    with pytest.raises(InvalidOptionError, match="storage_path"):
        LanceBackend(bucket_id=0, storage_path=12)
    with pytest.raises(InvalidOptionError, match="bucket_id"):
        LanceBackend(bucket_id=-1, storage_path=str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="file"):
        LanceBackend(bucket_id=0, storage_path=str(blocker / "b"))


def test_unknown_options_warn_and_are_ignored(tmp_path):
    with pytest.warns(UserWarning, match="colour"):
        b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path / "p"), colour="blue")
    assert b.total_count() == 0
    # the reference: LanceBackend ignores other options (a WAL among them)
    with pytest.warns(UserWarning, match="enable_wal"):
        LanceBackend(bucket_id=0, storage_path=str(tmp_path / "l"), enable_wal=True)
    assert not (tmp_path / "l" / "wal").exists()


def test_flush_threshold_zero_flushes_by_bytes_or_on_demand_only(tmp_path):
    import asyncio

    from persisting import PersistingBackend

    async def run():
        b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), flush_threshold=0)
        await b.put_batch([{"i": i} for i in range(50)])
        assert (await b.stats())["persisted_count"] == 0
        await b.flush()
        assert (await b.stats())["persisted_count"] == 50
        await b.close()

    asyncio.run(run())


def test_signature_defaults_are_the_librarys(tmp_path):
    import inspect
    import json

    from persisting import LanceBackend, PersistingBackend, _native

    defaults = json.loads(_native.DEFAULT_OPTIONS_JSON)
    for cls in (LanceBackend, PersistingBackend):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name in defaults:
                assert p.default == defaults[name], (cls, name)
    assert defaults["batch_size"] == 100 and defaults["flush_threshold"] == 1000


def test_the_libraries_diagnostics_reach_the_persisting_logger(tmp_path, caplog):
    import logging

    from persisting import _native

    # an option the Rust library ignores is reported through `log`, routed to Python's
    # logging (the classes above drop unknown options before the library sees them)
    with caplog.at_level(logging.WARNING, logger="persisting"):
        _native.Bucket(0, str(tmp_path / "n"), {"colour": "blue"}, "persisting").close_sync()
    found = [r for r in caplog.records if r.name == "persisting" and "colour" in r.getMessage()]
    assert found and found[0].levelno == logging.WARNING, caplog.records


async def test_schema_conflict_raises_and_stores_nothing(tmp_path):
    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path))
    await b.put_batch([{"id": "a", "n": 1}, {"id": "b", "n": 2}])
    await b.flush()
    with pytest.raises(SchemaError) as e:
        await b.put_batch([{"id": "c", "n": 3}, {"id": "d", "n": "four"}])
    assert "n" in str(e.value)
    assert isinstance(e.value, TypeError)
    assert b.total_count() == 2
    # a documented coercion: an int column meeting a float becomes float
    await b.put({"id": "e", "n": 2.5})
    await b.flush()
    assert [r["n"] for r in await b.get()] == [1.0, 2.0, 2.5]


async def test_a_second_writer_of_a_bucket_is_refused(tmp_path):
    from persisting import BucketLockedError

    b = PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    with pytest.raises(BucketLockedError, match="LOCK"):
        PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    await b.close()
    with pytest.raises(StorageError, match="closed"):
        await b.put({"a": 1})


def test_wal_damage_is_a_wal_error(tmp_path):
    import asyncio

    async def write():
        b = PersistingBackend(
            bucket_id=0, storage_path=str(tmp_path), enable_wal=True, wal_sync_interval=0
        )
        await b.put_batch([{"i": i, "pad": "p" * 64} for i in range(50)])
        await b.close()

    asyncio.run(write())
    # close() flushed: remove Lance's copy, so the WAL is all there is, then damage it
    segments = sorted((tmp_path / "wal").glob("*.wal"))
    assert segments
    import shutil

    shutil.rmtree(tmp_path / "data.lance")
    seg = segments[0]
    data = bytearray(seg.read_bytes())
    if len(data) > 200:
        data[150] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(StorageError) as e:
        PersistingBackend(bucket_id=0, storage_path=str(tmp_path), enable_wal=True)
    assert isinstance(e.value, WALError), type(e.value)
    assert "wal" in str(e.value).lower()

"""The worker's SSP read cache (paracel/cache.py) without MPI, and partial hits on real ranks."""
from __future__ import annotations

import json

import numpy as np

from mpi4py import MPI

from paracel import launch
from paracel.batch import KeyBatch, ValueBatch
from paracel.cache import COMPACT_FROM, ReadCache
from paracel.client import ParamClient
from paracel.layout import Layout
from paracel.usage import Usage


def cached(cache: ReadCache, keys, since: int) -> np.ndarray:
    return cache.stamps_at(cache.slots(KeyBatch.of(keys))) >= since


def test_store_serves_copies_in_key_order():
    cache = ReadCache()
    keys = np.arange(10, 20)
    rows = np.arange(30.0).reshape(10, 3)
    cache.store(KeyBatch.of(keys), ValueBatch(dense=rows.copy()), stamp=4)
    order = np.array([19, 10, 15])
    slots = cache.slots(KeyBatch.of(order))
    assert cached(cache, order, 4).all() and not cached(cache, order, 5).any()
    got = cache.values(slots).dense
    np.testing.assert_array_equal(got, rows[order - 10])
    got[:] = -1  # the caller's copy: the cache is unchanged
    np.testing.assert_array_equal(cache.values(slots).dense, rows[order - 10])
    one = cache.values(cache.slots(KeyBatch.of([12])))
    one.dense[:] = -1
    np.testing.assert_array_equal(cache.values(cache.slots(KeyBatch.of([12]))).dense, rows[2:3])


def test_unknown_and_forgotten_keys_are_misses():
    cache = ReadCache()
    cache.store(KeyBatch.of(["a", "b", "c"]), ValueBatch.of([1.0, 2.0, 3.0], 3), stamp=0)
    assert list(cached(cache, ["a", "zz", "c"], 0)) == [True, False, True]
    cache.forget(KeyBatch.of(["c", "nope"]))
    assert list(cached(cache, ["a", "b", "c"], 0)) == [True, True, False]
    cache.store(KeyBatch.of(["c"]), ValueBatch.of([9.0], 1), stamp=1)  # read anew
    assert cached(cache, ["c"], 1).all()
    assert cache.values(cache.slots(KeyBatch.of(["c", "a"]))).to_list() == [9.0, 1.0]


def test_values_of_several_signatures_come_back_each_as_stored():
    cache = ReadCache()
    cache.store(KeyBatch.of([1, 2]), ValueBatch.of([np.arange(3), 2.5], 2), stamp=0)
    cache.store(KeyBatch.of([3]), ValueBatch.of([np.ones((2, 2), np.float32)], 1), stamp=0)
    out = cache.values(cache.slots(KeyBatch.of([3, 1, 2]))).to_list()
    assert out[0].dtype == np.float32 and out[0].shape == (2, 2)
    np.testing.assert_array_equal(out[1], np.arange(3))
    assert out[2] == 2.5 and isinstance(out[2], float)
    cache.store(KeyBatch.of([2]), ValueBatch.of([np.zeros(3)], 1), stamp=2)  # a new signature for key 2
    assert cached(cache, [2], 2).all() and not cached(cache, [1], 2).any()
    np.testing.assert_array_equal(cache.values(cache.slots(KeyBatch.of([2]))).to_list()[0], np.zeros(3))


def test_compact_empties_a_large_cache_of_mostly_unused_rows_only():
    cache = ReadCache()
    n = 2 * COMPACT_FROM
    cache.store(KeyBatch.of(np.arange(n)), ValueBatch(dense=np.zeros((n, 2))), stamp=0)
    cache.store(KeyBatch.of(np.arange(n // 2 + 1)), ValueBatch(dense=np.ones((n // 2 + 1, 2))), stamp=3)
    cache.compact(since=4)  # just over half the rows were read in the clock just ended: kept
    assert len(cache) == n
    cache.forget(KeyBatch.of(np.arange(2)))
    cache.compact(since=4)
    assert len(cache) == 0 and not cached(cache, [5], 0).any()
    small = ReadCache()
    small.store(KeyBatch.of([1]), ValueBatch.of([1.0], 1), stamp=0)
    small.compact(since=9)  # too small to bother
    assert len(small) == 1


def test_partial_hits_pull_only_the_missing_keys(tmp_path):
    out = tmp_path / "out"
    job = launch({"algorithm": "tests.jobs:CacheProbe", "staleness": 2, "output": str(out)},
                 workers=2, servers=2, timeout=60)
    assert job.returncode == 0, job.stderr
    for w in range(2):
        steps = json.loads((out / f"cache_{w}.json").read_text())
        assert [s["misses"] for s in steps] == [50, 50, 0, 10, 2, 0], (w, steps)
        assert all(s["correct"] for s in steps), (w, steps)


def test_reads_count_the_staleness_they_saw_cache_hits_too(monkeypatch):
    """A read counts its lag: the reader's clock minus the clock its stalest value is fresh from
    (a cached value's stamp; for a pulled one the slowest clock known when it was pulled)."""
    client = ParamClient(MPI.COMM_SELF, Layout(1, 1), staleness=2)
    client.usage = Usage(client)
    rows = np.arange(30.0).reshape(15, 2)
    pulled = []

    def pull(batch: KeyBatch) -> ValueBatch:  # the servers, without MPI
        pulled.append(batch.ints.tolist())
        return ValueBatch(dense=rows[batch.ints])
    monkeypatch.setattr(client, "_pull", pull)

    def read(keys, clock: int, known_min: int) -> None:
        client.clock, client.known_min = clock, known_min
        np.testing.assert_array_equal(client.read(keys, as_array=True), rows[keys])

    read(np.arange(10), 3, 3)  # pulled, every worker at clock 3: lag 0
    read(np.arange(10), 5, 4)  # all cached, fresh from clock 3: lag 2
    read(np.arange(15), 5, 4)  # a partial hit: 10 from clock 3, 5 pulled (fresh from 4): lag 2
    read(np.arange(10, 15), 6, 5)  # cached from clock 4 (6 - 2 = 4: fresh enough): lag 2
    read(np.arange(5), 6, 5)  # cached from clock 3, too stale: pulled, fresh from 5: lag 1
    assert len(client.read([])) == 0  # an empty read saw nothing
    assert pulled == [list(range(10)), list(range(10, 15)), list(range(5))]
    assert client.usage.staleness == {0: 1, 2: 3, 1: 1}
    assert (client.cache_hits, client.cache_misses) == (10 + 10 + 5, 10 + 5 + 5)
    uncached = ParamClient(MPI.COMM_SELF, Layout(1, 1), staleness=None)
    uncached.usage = Usage(uncached)
    monkeypatch.setattr(uncached, "_pull", pull)
    uncached.clock, uncached.known_min = 7, 2
    uncached.read(np.arange(3))
    assert uncached.usage.staleness == {5: 1}

"""The consistent-hash ring: deterministic across processes, balanced, stable when growing."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from paracel.batch import KeyBatch
from paracel.ring import KeyRing

ROUTE_IN_CHILD = """
import numpy as np
from paracel.batch import KeyBatch
from paracel.ring import KeyRing
r = KeyRing(5)
print(r.route(KeyBatch.of(np.arange(1000))).tolist(), r.route(KeyBatch.of([f"key{i}" for i in range(1000)])).tolist())
"""


def test_placement_is_the_same_in_another_process():
    ring = KeyRing(5)
    here = f"{ring.route(KeyBatch.of(np.arange(1000))).tolist()} " \
           f"{ring.route(KeyBatch.of([f'key{i}' for i in range(1000)])).tolist()}"
    for seed in ("0", "12345"):  # a different hash seed must not matter
        child = subprocess.run([sys.executable, "-c", ROUTE_IN_CHILD], capture_output=True, text=True,
                               env={"PYTHONHASHSEED": seed, "PATH": ""}, timeout=60, check=True)
        assert child.stdout.strip() == here


def test_four_servers_hold_a_quarter_each():
    ring = KeyRing(4)
    for keys in (np.arange(100_000), [f"user:{i}" for i in range(100_000)]):
        share = np.bincount(ring.route(KeyBatch.of(keys)), minlength=4) / 100_000
        assert np.all(np.abs(share - 0.25) <= 0.05), share


def test_adding_a_server_moves_only_its_share():
    keys = KeyBatch.of(np.arange(50_000))
    before, after = KeyRing(4).route(keys), KeyRing(5).route(keys)
    moved = before != after
    assert np.all(after[moved] == 4)  # keys only move to the new server
    assert 0.12 < moved.mean() < 0.28


def test_split_groups_positions_by_server():
    ring = KeyRing(3)
    keys = KeyBatch.of(np.arange(1000))
    owners = ring.route(keys)
    groups = ring.split(keys)
    assert sorted(np.concatenate([pos for _, pos in groups]).tolist()) == list(range(1000))
    for server, pos in groups:
        assert np.all(owners[pos] == server)

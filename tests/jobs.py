"""Algorithms used by the MPI integration tests (run by real ranks via paracel.launch)."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

from paracel import paralg


class ConcurrentAdd(paralg):
    """Every worker adds 1 to the same keys ``rounds`` times (batched and single updates)."""

    def __init__(self, nkeys: int = 1000, rounds: int = 5):
        self.nkeys, self.rounds = nkeys, rounds

    def solve(self) -> None:
        keys = np.arange(self.nkeys)
        names = [f"k{i}" for i in range(self.nkeys)]
        for _ in range(self.rounds):
            self.paracel_bupdate_multi(keys, np.ones((self.nkeys, 2)))
            self.paracel_bupdate_multi(names, np.ones(self.nkeys, dtype=np.int64))
            self.paracel_update("single", 1)
            self.iter_commit()
        self.sync()
        ints = self.paracel_read_multi(keys, as_array=True)
        strs = self.paracel_read_multi(names)
        family = self.paracel_read_prefix("k")
        everything = self.paracel_readall()
        odd = self.paracel_readall(keyfilter=lambda k: isinstance(k, int) and k % 2 == 1)
        self.paracel_bupdate_multi([], [])
        empty = (self.paracel_read_multi([]), self.paracel_read_multi(np.arange(0), as_array=True).shape)
        if self.get_worker_id() == 0:
            result = {
                "ints_ok": bool((ints == self.rounds * self.get_worker_size()).all()),
                "ints_shape": list(ints.shape),
                "strs": sorted(set(int(v) for v in strs)),
                "str_type": type(strs[0]).__name__,
                "single": self.paracel_read("single"),
                "single_type": type(self.paracel_read("single")).__name__,
                "family_size": len(family),
                "family_ok": family == dict(zip(names, strs)),
                "all_size": len(everything),
                "odd_keys": sorted(odd) == list(range(1, self.nkeys, 2)),
                "empty": empty == ([], (0,)),
                "contains": [self.paracel_contains("k0"), self.paracel_contains("nope")],
            }
            (self.output_dir / "result.json").write_text(json.dumps(result))


class TopK(paralg):
    """Worker w writes values to its own keys; worker 0 checks top-k and removal."""

    def __init__(self, k: int = 5):
        self.k = k

    def solve(self) -> None:
        w = self.get_worker_id()
        self.paracel_write_multi({f"x{w}-{i}": float(i * (w + 1)) for i in range(50)})
        self.paracel_write_multi({f"y{w}-{i}": 1000.0 for i in range(3)})
        self.sync()
        if w == 0:
            result = {
                "top": self.paracel_read_topk(self.k, prefix="x"),
                "top_all": self.paracel_read_topk(2),
                "removed": [self.paracel_remove("y0-0"), self.paracel_remove("y0-0")],
                "after": self.paracel_contains("y0-0"),
            }
            (self.output_dir / "result.json").write_text(json.dumps(result))


class SSPProbe(paralg):
    """Records, per clock, when a worker entered it and what it read of every worker's counter.

    Worker ``slow`` sleeps ``delay`` seconds per iteration, so the others run ahead as far as
    the staleness bound lets them.
    """

    def __init__(self, rounds: int = 8, slow: int = 0, delay: float = 0.05):
        self.rounds, self.slow, self.delay = rounds, slow, delay

    def solve(self) -> None:
        w, n = self.get_worker_id(), self.get_worker_size()
        log = []
        for clock in range(self.rounds):
            entered = time.time()
            seen = [int(self.paracel_read(f"c{q}")) if self.paracel_contains(f"c{q}") else 0 for q in range(n)]
            log.append({"clock": clock, "t": entered, "seen": seen})
            if w == self.slow:
                time.sleep(self.delay)
            self.paracel_bupdate(f"c{w}", 1)
            log[-1]["committing"] = time.time()
            self.iter_commit()
        log.append({"clock": self.rounds, "t": time.time(), "seen": None})
        (self.output_dir / f"ssp_{w}.json").write_text(json.dumps(log))


class Raises(paralg):
    """Fails in the way ``mode`` names; the other workers would otherwise wait forever."""

    def __init__(self, mode: str):
        self.mode = mode

    def solve(self) -> None:
        if self.mode == "worker" and self.get_worker_id() == 1:
            raise RuntimeError("deliberate failure in solve")
        if self.mode == "killed" and self.get_worker_id() == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # no Python handler runs: MPI must notice
        if self.mode == "leaves_early":
            if self.get_worker_id() != 1:
                self.sync()  # worker 1 never comes: an error, not a hang
            return
        self.paracel_write("k", 1.0)  # present, so that updates call the function
        self.sync()
        if self.mode == "update_fn":
            self.paracel_update("k", 1.0, fn="tests.jobs:failing_update")
        if self.mode == "unknown_fn":
            self.paracel_update("k", 1.0, fn="no_such_fn")
        if self.mode == "batched_fn":
            self.paracel_bupdate("k", 1.0, fn="no_such_fn")
        if self.mode == "recovers":
            try:
                self.paracel_update("k", 1.0, fn="tests.jobs:failing_update")
            except Exception as exc:  # the server must keep serving after a failed request
                self.paracel_write("k", 5.0)
                assert self.paracel_read("k") == 5.0
                (self.output_dir / f"caught_{self.get_worker_id()}.txt").write_text(str(exc))
        for _ in range(3):  # the other workers block here at s=0 unless the job is ended
            self.iter_commit()


def failing_update(old, delta):
    """An update function that always raises (imported by the servers)."""
    raise ValueError(f"cannot combine {old!r} and {delta!r}")


def capped_add(old, delta):
    """A user update function: add, but never beyond 10."""
    return min(old + delta, 10)


class UserFn(paralg):
    def solve(self) -> None:
        for _ in range(4):
            self.paracel_update("capped", 3, fn="tests.jobs:capped_add")
        self.sync()
        if self.get_worker_id() == 0:
            (self.output_dir / "result.json").write_text(json.dumps(self.paracel_read("capped")))


class CacheProbe(paralg):
    """Reads overlapping key sets under SSP and records, per read, how many keys had to be
    pulled (the cache's misses) and whether the values were right (run with staleness >= 1).
    Each worker reads only keys it wrote, so what it must see is known exactly."""

    def solve(self) -> None:
        w = self.get_worker_id()
        keys = np.arange(100) + 1000 * w
        expected = np.repeat(keys[:, None], 3, axis=1).astype(float)
        names = [f"w{w}-0", f"w{w}-1"]
        self.paracel_write_multi(keys, expected)
        self.paracel_write_multi(names, [0, 1])
        self.sync()
        client, steps = self._client, []

        def read(which, want) -> None:
            before = client.cache_misses
            got = self.paracel_read_multi(which, as_array=True)
            steps.append({"misses": client.cache_misses - before, "correct": bool(np.array_equal(got, want))})

        read(keys[:50], expected[:50])  # all pulled
        read(keys[::-1], expected[::-1])  # a partial hit: only the other 50 pulled
        read(keys, expected)  # all cached
        self.paracel_bupdate_multi(keys[10:20], np.ones((10, 3)))
        expected[10:20] += 1
        read(keys, expected)  # read-my-writes: the 10 updated keys pulled anew
        read(names[::-1], np.array([1, 0]))
        read(names[:1], np.array([0]))
        (self.output_dir / f"cache_{w}.json").write_text(json.dumps(steps))

"""The SSP guarantee (DESIGN §3) checked on real ranks with one deliberately slow worker.

Every worker adds 1 to its own counter once per clock and, on entering each clock, reads every
worker's counter; the logs of entry times, commit times and values seen are checked against
rules 1-3.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from paracel import ServerError, launch, paralg

WORKERS, ROUNDS, DELAY = 3, 10, 0.08


def probe(tmp_path, staleness):
    out = tmp_path / f"s{staleness}"
    launch({"algorithm": "tests.jobs:SSPProbe", "staleness": staleness, "output": str(out),
            "params": {"rounds": ROUNDS, "slow": 0, "delay": DELAY}}, workers=WORKERS, servers=2, timeout=90)
    clock = json.loads((out / "clock.json").read_text())
    assert clock["staleness"] == staleness and clock["clocks"] == [ROUNDS] * WORKERS
    if staleness is not None:
        assert clock["max_lead"] == staleness  # the fast workers ran exactly as far ahead as allowed
    else:
        assert clock["max_lead"] > 3
    return [json.loads((out / f"ssp_{w}.json").read_text()) for w in range(WORKERS)]


@pytest.mark.parametrize("staleness", [0, 1, 3])
def test_bounded_staleness_rules(tmp_path, staleness):
    logs = probe(tmp_path, staleness)
    for p, log in enumerate(logs):
        for entry in log[:-1]:
            c, seen = entry["clock"], entry["seen"]
            # rule 1: every update stamped <= c-s-1 is visible, and my own are (read-my-writes)
            assert seen[p] == c
            assert all(v >= c - staleness for v in seen), (p, c, seen)
            if staleness == 0:  # BSP: nobody can be more than one update further
                assert all(v <= c + 1 for v in seen), (p, c, seen)
        for entry in log:
            c = entry["clock"]
            # rule 2: p entered clock c only after every worker began committing clock c-s-1
            if c - staleness - 1 >= 0:
                for q in range(WORKERS):
                    assert entry["t"] >= logs[q][c - staleness - 1]["committing"], (p, q, c)
    # the slow worker really held the others back: a fast one finished with it, not long before
    fast_end, slow_end = logs[1][-1]["t"], logs[0][-1]["t"]
    assert slow_end - fast_end < (staleness + 3) * DELAY  # unbounded: ~(ROUNDS - 1) * DELAY


def test_asynchronous_never_blocks(tmp_path):
    logs = probe(tmp_path, None)
    for p, log in enumerate(logs):
        for entry in log[:-1]:
            assert entry["seen"][p] == entry["clock"]  # read-my-writes still holds
    fast_end, slow_end = logs[1][-1]["t"], logs[0][-1]["t"]
    slow_start = logs[0][0]["t"]
    # the fast workers ran all their clocks while the slow one was still early in its own
    assert fast_end - slow_start < (slow_end - slow_start) / 2


class BatchedUpdates(paralg):
    """Each worker, on keys of its own: ``rounds`` batched updates whose arrays it overwrites
    right after the call, each read back at once (read-my-writes); then a batched update that
    fails on the server, followed by a read that flushes on its way. Writes what it saw."""

    def __init__(self, rounds: int = 5):
        self.rounds = rounds

    def solve(self) -> None:
        w = self.get_worker_id()
        keys, single = np.arange(1000) + 10_000 * w, f"one-{w}"  # 24 KB and 16 KB: large enough to be
        self.paracel_write_multi(keys, np.zeros((1000, 3)))          # in flight when the call returns
        self.paracel_write(single, np.zeros(2000))
        seen = []
        for r in range(self.rounds):
            deltas, delta = np.ones((1000, 3)), np.ones(2000)
            self.paracel_bupdate_multi(keys, deltas)
            self.paracel_bupdate(single, delta)
            deltas[:], delta[:] = -1000.0, -1000.0  # the caller's arrays change while the updates may be in flight
            rows, value = self.paracel_read_multi(keys, as_array=True), self.paracel_read(single)
            seen.append(bool((rows == r + 1).all() and (value == r + 1).all()))
            self.iter_commit()
        self.paracel_bupdate(single, np.ones(5))  # a delta of the wrong shape: fails on the server
        read_after = bool((self.paracel_read_multi(keys, as_array=True) == self.rounds).all())
        try:
            self.iter_commit()
            error = None
        except ServerError as exc:
            error = str(exc)
        self.iter_commit()  # the failure was reported once; the worker goes on
        (self.output_dir / f"batched_{w}.json").write_text(json.dumps(
            {"seen": seen, "read_after": read_after, "error": error, "early": self._client.returns_early}))


def test_batched_updates_carry_the_values_given_and_report_failures_at_the_commit(tmp_path):
    """Batched updates may return before the servers take them: the caller may change its arrays
    at once, its reads see its updates, and a failing update raises at the next ``iter_commit``
    even when a read has flushed it on the way."""
    out = tmp_path / "out"
    launch({"algorithm": "tests.test_ssp:BatchedUpdates", "staleness": 1, "output": str(out)},
           workers=2, servers=1, timeout=60)
    for w in range(2):
        got = json.loads((out / f"batched_{w}.json").read_text())
        assert got["seen"] == [True] * 5 and got["read_after"], got
        assert "batched update: ValueError: update 'add' of key" in got["error"], got
        assert "a delta of shape (5,) cannot change the stored value's shape (2000,)" in got["error"], got

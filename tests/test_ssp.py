"""The SSP guarantee (DESIGN §3) checked on real ranks with one deliberately slow worker.

Every worker adds 1 to its own counter once per clock and, on entering each clock, reads every
worker's counter; the logs of entry times, commit times and values seen are checked against
rules 1-3.
"""
from __future__ import annotations

import json

import pytest

from paracel import launch

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

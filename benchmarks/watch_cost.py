"""What watching a run costs: the per-call usage counting of ``paracel.usage`` on the shipped MF job.

Run from the repository root: ``python benchmarks/watch_cost.py``. It runs ``configs/mf.json``
(2 workers, 2 servers, MovieLens 100K u1 from ``../shared/data``) and reads from its
``metrics.jsonl`` how many requests each worker sent and how many it sent the clock rank
(ticks, barriers, metrics rows). It then times the real ``Usage`` hooks of one call — a pull of
a worker's item rows, and a tick carrying its snapshot — in this process, on a real
``ParamClient`` over ``MPI.COMM_SELF`` (nothing is sent), and prints their cost over the run
beside the workers' wall time: the share of the job that collecting the run record takes
(the whole hooks are counted for every request, so the figure is an upper bound).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "movielens-100k"


def hook_seconds(request, rank: int, repeats: int = 20_000) -> float:
    """Seconds of one call's usage hooks (start, sent, received, end) for ``request`` to ``rank``."""
    from mpi4py import MPI

    from paracel.client import ParamClient
    from paracel.layout import Layout
    from paracel.usage import Usage

    usage = Usage(ParamClient(MPI.COMM_SELF, Layout(2, 2), staleness=2))
    calls, buffers = [(rank, request)], request.encode()[1]
    start = time.perf_counter()
    for _ in range(repeats):
        started = usage.start_call(calls)
        usage.sent(rank, request, buffers)
        usage.received(rank, buffers)
        usage.end_call(started, calls)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    from paracel import launch
    from paracel.batch import KeyBatch
    from paracel.protocol import Pull, Tick

    with tempfile.TemporaryDirectory() as tmp:
        data = [f"params.train={DATA / 'u1.base'}", f"params.test={DATA / 'u1.test'}"]
        out = launch(ROOT / "configs" / "mf.json", workers=2, servers=2, overrides=data, output=tmp,
                     progress="quiet", timeout=300).output_dir
        events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = {e["worker"]: e["usage"] for e in events if e["event"] == "done"}
    to_clock = {w: sum(1 for e in events if e.get("worker") == w and e["event"] in ("tick", "sync", "metrics", "total"))
                for w in final}
    pull = Pull(KeyBatch.of(np.arange(1_650)))  # a worker's item rows of u1: one pull per round
    server_call, clock_call = hook_seconds(pull, 2), hook_seconds(Tick(), 4)
    print("| worker | requests to servers | to the clock | hooks' cost | worker wall | share |")
    print("|---|---|---|---|---|---|")
    for w, usage in sorted(final.items()):
        requests = sum(row[0] for row in usage["load"])
        cost = requests * server_call + to_clock[w] * clock_call
        print(f"| {w} | {requests} | {to_clock[w]} | {cost * 1e3:.2f} ms | {usage['wall']:.3f} s "
              f"| {100 * cost / usage['wall']:.3f}% |")
    print(f"\none server call's hooks: {server_call * 1e6:.1f} us; one clock call's (with its snapshot): "
          f"{clock_call * 1e6:.1f} us")


if __name__ == "__main__":
    main()

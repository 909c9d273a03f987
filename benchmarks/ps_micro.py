"""Parameter-server micro-benchmark: paracel beside raw mpi4py on the same ranks.

    python benchmarks/ps_micro.py [--repeats 30]

Measures, with 2 workers and 1 server (plus the clock rank), (a) batched pull and push of
10,000 keys x 10 float64 per call in keys/s (both workers at once, totals per server) and
(b) pull and push of one 8 MB array in MB/s (one worker). The baseline sends the same bytes
with plain mpi4py buffer calls between the same ranks, the "server" doing no table work.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paracel import launch, paralg  # noqa: E402
from paracel.launch import mpiexec_path, run_command  # noqa: E402

NKEYS, WIDTH, BIG = 10_000, 10, 8 * 2**20 // 8  # BIG: float64 elements in 8 MB


class PSMicro(paralg):
    """Times batched and big pulls/pushes through paracel; worker 0 writes the figures."""

    def __init__(self, repeats: int = 30):
        self.repeats = repeats

    def _timed(self, fn) -> float:
        """Slowest worker's time for ``repeats`` calls (waits through the clock rank, which
        sleeps, rather than MPI collectives, which would spin on a core the others need)."""
        self.sync()
        start = time.perf_counter()
        for _ in range(self.repeats):
            fn()
        self.paracel_write(f"elapsed-{self.get_worker_id()}", time.perf_counter() - start)
        self.sync()
        return max(self.paracel_read_multi([f"elapsed-{w}" for w in range(self.get_worker_size())]))

    def solve(self) -> None:
        keys = np.arange(NKEYS)
        values = np.random.default_rng(self.get_worker_id()).normal(size=(NKEYS, WIDTH))
        self.paracel_write_multi(keys, values)
        self.paracel_read_multi(keys, as_array=True)  # warm-up
        total = self.repeats * NKEYS * self.get_worker_size()
        pull = total / self._timed(lambda: self.paracel_read_multi(keys, as_array=True))
        push = total / self._timed(lambda: self.paracel_write_multi(keys, values))
        big = np.ones(BIG)
        mine = f"big-{self.get_worker_id()}"
        self.paracel_write(mine, big)
        one = self.get_worker_id() == 0
        mb = self.repeats * big.nbytes / 1e6
        big_pull = mb / self._timed(lambda: one and self.paracel_read(mine))
        big_push = mb / self._timed(lambda: one and self.paracel_write(mine, big))
        if one:
            figures = {"pull_keys_s": pull, "push_keys_s": push, "big_pull_MB_s": big_pull, "big_push_MB_s": big_push}
            (self.output_dir / "figures.json").write_text(json.dumps(figures))


def quiet(request) -> None:
    """Complete a non-blocking MPI call without spinning a core (as paracel's ranks wait)."""
    while not request.Test():
        time.sleep(1e-4)


def raw_mpi(repeats: int, out: Path) -> None:
    """Rank layout as in paracel (2 workers, server rank 2, idle rank 3); same bytes, no table."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    workers = comm.Split(0 if rank < 2 else 1, rank)
    keys, values, ack = np.arange(NKEYS, dtype=np.int64), np.ones((NKEYS, WIDTH)), np.zeros(1)
    big = np.ones(BIG)
    phases = [("pull", 2, keys, values), ("push", 2, (keys, values), ack),
              ("big_pull", 1, keys[:1], big), ("big_push", 1, (keys[:1], big), ack)]
    figures = {}
    for name, nclients, request, reply in phases:
        rounds = repeats * nclients
        requests = request if isinstance(request, tuple) else (request,)
        if rank == 2:
            status = MPI.Status()
            for _ in range(rounds):
                comm.Probe(MPI.ANY_SOURCE, 0, status)
                for part in requests:
                    comm.Recv(part, status.Get_source(), 0)
                comm.Send(reply, status.Get_source(), 1)
        elif rank < nclients:
            quiet(workers.Ibarrier())
            start = time.perf_counter()
            for _ in range(repeats):
                for part in requests:
                    comm.Send(part, 2, 0)
                comm.Recv(reply, 2, 1)
            elapsed = np.array([time.perf_counter() - start])
            quiet(workers.Iallreduce(MPI.IN_PLACE, elapsed, MPI.MAX))
            per_call = NKEYS if name in ("pull", "push") else big.nbytes / 1e6
            figures[f"{name}_{'keys_s' if name in ('pull', 'push') else 'MB_s'}"] = nclients * repeats * per_call / elapsed[0]
        elif rank < 2:
            quiet(workers.Ibarrier())
            quiet(workers.Iallreduce(MPI.IN_PLACE, np.zeros(1), MPI.MAX))
    if rank == 0:
        (out / "raw.json").write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--raw", help=argparse.SUPPRESS)  # internal: run as a raw-MPI rank
    args = parser.parse_args()
    if args.raw:
        raw_mpi(args.repeats, Path(args.raw))
        return
    out = Path(tempfile.mkdtemp(prefix="ps_micro-"))
    launch({"algorithm": "benchmarks.ps_micro:PSMicro", "params": {"repeats": args.repeats}, "staleness": None,
            "output": str(out)}, workers=2, servers=1, timeout=600)
    done = run_command([mpiexec_path(), "-n", "4", sys.executable, __file__, "--raw", str(out), "--repeats",
                        str(args.repeats)], timeout=600)
    if done.returncode != 0:
        sys.exit(f"raw MPI baseline failed:\n{done.stderr}")
    ours = json.loads((out / "figures.json").read_text())
    raw = json.loads((out / "raw.json").read_text())
    print(f"{'measure (2 workers, 1 server)':40s} {'paracel':>14s} {'raw mpi4py':>14s} {'ratio':>7s}")
    for key, label in [("pull_keys_s", "batched pull, keys/s (10k x 10 f64)"),
                       ("push_keys_s", "batched push, keys/s (10k x 10 f64)"),
                       ("big_pull_MB_s", "pull one 8 MB array, MB/s"),
                       ("big_push_MB_s", "push one 8 MB array, MB/s")]:
        print(f"{label:40s} {ours[key]:14,.0f} {raw[key]:14,.0f} {ours[key] / raw[key]:7.1%}")


if __name__ == "__main__":
    main()

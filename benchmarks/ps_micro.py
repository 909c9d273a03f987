"""Parameter-server micro-benchmark: paracel beside raw mpi4py on the same ranks, in one run.

    python benchmarks/ps_micro.py [--repeats 30] [--table-keys 1000000] [--rounds 1] [--only table]

With 2 workers and 1 server (plus the clock rank), 10,000 keys x 10 float64 per call:
  basic    batched pull and push with the cache off (keys/s, both workers, per server), and one
           8 MB array pulled and pushed by one worker (MB/s);
  cached   batched reads repeated within one clock at staleness 2, served by the cache;
  loop     the training-shaped iteration ``paracel_bupdate_multi`` + ``paracel_read_multi`` +
           ``iter_commit`` at staleness 0, 2 and unbounded, cache on (keys/s: both workers'
           keys pushed and pulled back per second);
  stall    one worker's batched update followed by 20 ms of computing without MPI calls, while
           the other worker reads one key again and again: how long the update takes to return,
           and the slowest read meanwhile (a server stalled on the update would hold it up).
With 2 workers and 2 servers, a table of ``--table-keys`` distinct keys x 10 float64, each worker
its half in batches of 100,000 keys (staleness 0): first write, update + commit, read (keys/s
per server). The raw baseline moves the same bytes the same way with plain mpi4py buffer calls
between the same ranks: its "server" adds pushed rows into an array and sends rows back, its
"clock" releases both workers once both ticked; it does no table work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paracel import launch, paralg  # noqa: E402
from paracel.launch import mpiexec_path, run_command  # noqa: E402

NKEYS, WIDTH, BIG = 10_000, 10, 8 * 2**20 // 8  # BIG: float64 elements in 8 MB
COMPUTE = 0.02  # seconds a worker computes after its batched update in the "stall" phase
TABLE_BATCH, TABLE_SERVERS = 100_000, 2
LOOP_STALENESS = (0, 2, None)


class PSMicro(paralg):
    """Times one phase of the benchmark through paracel; worker 0 writes ``<phase>.json``."""

    def __init__(self, phase: Literal["basic", "cached", "loop", "stall", "table"] = "basic", repeats: int = 30,
                 table_keys: int = 1_000_000):
        self.phase, self.repeats, self.table_keys = phase, repeats, table_keys

    def _timed(self, fn: Callable[[], object], repeats: int | None = None) -> float:
        """Slowest worker's time for ``repeats`` calls (waits through the clock rank, which
        sleeps, rather than MPI collectives, which would spin on a core the others need)."""
        self.sync()
        start = time.perf_counter()
        for _ in range(self.repeats if repeats is None else repeats):
            fn()
        self.paracel_write(f"elapsed-{self.get_worker_id()}", time.perf_counter() - start)
        self.sync()
        return max(self.paracel_read_multi([f"elapsed-{w}" for w in range(self.get_worker_size())]))

    def solve(self) -> None:
        figures = getattr(self, f"_{self.phase}")()
        if self.get_worker_id() == 0:
            (self.output_dir / f"{self.phase}.json").write_text(json.dumps(figures))

    def _basic(self) -> dict[str, float]:
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
        if one:  # warm-up: the first pull lands in fresh memory (page faults, ~20 ms here); raw reuses its array
            self.paracel_read(mine)
        mb = self.repeats * big.nbytes / 1e6
        big_pull = mb / self._timed(lambda: one and self.paracel_read(mine))
        big_push = mb / self._timed(lambda: one and self.paracel_write(mine, big))
        return {"pull_keys_s": pull, "push_keys_s": push, "big_pull_MB_s": big_pull, "big_push_MB_s": big_push}

    def _cached(self) -> dict[str, float]:
        keys = np.arange(NKEYS)
        self.paracel_write_multi(keys, np.ones((NKEYS, WIDTH)))
        self.sync()
        self.paracel_read_multi(keys, as_array=True)  # fills the cache

        def reads() -> None:
            for _ in range(10):
                self.paracel_read_multi(keys, as_array=True)
        self.sync()  # (empties the cache: the first read of each timed call refills it)
        elapsed = self._timed(reads)
        return {"cached_read_keys_s": 10 * self.repeats * NKEYS * self.get_worker_size() / elapsed}

    def _loop(self) -> dict[str, float]:
        keys = np.arange(NKEYS)
        deltas = np.full((NKEYS, WIDTH), 1e-3)
        self.paracel_write_multi(keys, np.zeros((NKEYS, WIDTH)))

        def iteration() -> None:
            self.paracel_bupdate_multi(keys, deltas)
            self.paracel_read_multi(keys, as_array=True)
            self.iter_commit()
        iteration()  # warm-up
        elapsed = self._timed(iteration)
        return {"loop_keys_s": self.repeats * NKEYS * self.get_worker_size() / elapsed}

    def _stall(self) -> dict[str, float]:
        w = self.get_worker_id()
        keys, deltas = np.arange(NKEYS), np.full((NKEYS, WIDTH), 1e-3)
        self.paracel_write_multi(keys, np.zeros((NKEYS, WIDTH)))
        self.paracel_write("probe", 0.0)
        self.sync()
        times = []
        if w == 0:
            for _ in range(self.repeats):
                start = time.perf_counter()
                self.paracel_bupdate_multi(keys, deltas)
                times.append(time.perf_counter() - start)
                while time.perf_counter() - start < COMPUTE:  # computing without calling MPI
                    pass
            self.paracel_read("probe")  # the updates have moved on
        else:
            end = time.perf_counter() + self.repeats * COMPUTE
            while time.perf_counter() < end:
                start = time.perf_counter()
                self.paracel_read("probe")
                times.append(time.perf_counter() - start)
        self.paracel_write(f"stall-{w}", 1e3 * float(np.median(times) if w == 0 else np.max(times)))
        self.sync()
        bupdate, read = self.paracel_read_multi(["stall-0", "stall-1"])
        return {"stall_bupdate_ms": bupdate, "stall_read_ms": read}

    def _table(self) -> dict[str, float]:
        w, nw = self.get_worker_id(), self.get_worker_size()
        mine = np.arange(w, self.table_keys, nw, dtype=np.int64) * 7919  # spread, distinct
        batches = [mine[i:i + TABLE_BATCH] for i in range(0, len(mine), TABLE_BATCH)]
        rows = np.ones((TABLE_BATCH, WIDTH))

        def each(op: Callable[[np.ndarray, np.ndarray], object]) -> Callable[[], None]:
            return lambda: [op(b, rows[:len(b)]) for b in batches]

        def update(b: np.ndarray, r: np.ndarray) -> None:
            self.paracel_bupdate_multi(b, r)
            self.iter_commit()
        per_server = self.table_keys / TABLE_SERVERS
        write = per_server / self._timed(each(self.paracel_write_multi), 1)
        upd = per_server / self._timed(each(update), 1)
        read = per_server / self._timed(each(lambda b, r: self.paracel_read_multi(b, as_array=True)), 1)
        return {"table_write_keys_s": write, "table_update_keys_s": upd, "table_read_keys_s": read}


# ---------------------------------------------------------------------------- raw mpi4py
SERVER, CLOCK = 2, 3
PUSH, PULL, TICK, DATA, REPLY = 0, 1, 2, 3, 4


def quiet(request) -> None:
    """Complete a non-blocking MPI call without spinning a core (as paracel's ranks wait)."""
    while not request.Test():
        time.sleep(1e-4)


def poll(comm, source, tag, status) -> None:
    """Wait for a message by polling and yielding the core (a blocking MPI wait spins)."""
    while not comm.Iprobe(source, tag, status):
        os.sched_yield()


def raw_mpi(repeats: int, out: Path) -> None:
    """Rank layout as in paracel (workers 0 and 1, server rank 2, clock rank 3); same bytes."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    workers = comm.Split(0 if rank < 2 else 1, rank)
    status = MPI.Status()
    keys, values, ack = np.arange(NKEYS, dtype=np.int64), np.ones((NKEYS, WIDTH)), np.zeros(1)
    big = np.ones(BIG)
    table = np.zeros((NKEYS, WIDTH))
    figures = {}

    def timed(nclients: int, body: Callable[[], None]) -> float | None:
        if rank >= 2:
            return None
        quiet(workers.Ibarrier())
        start = time.perf_counter()
        if rank < nclients:
            for _ in range(repeats):
                body()
        elapsed = np.array([time.perf_counter() - start])
        quiet(workers.Iallreduce(MPI.IN_PLACE, elapsed, MPI.MAX))
        return float(elapsed[0])

    def serve(rounds: int, reply_for: dict[int, Callable[[int], np.ndarray | None]]) -> None:
        """The raw server: ``rounds`` requests, each a tag's key buffer (+ rows for PUSH)."""
        for _ in range(rounds):
            poll(comm, MPI.ANY_SOURCE, MPI.ANY_TAG, status)
            source, tag = status.Get_source(), status.Get_tag()
            reply = reply_for[tag](source)
            if reply is not None:
                comm.Send(reply, source, REPLY)

    def recv_push(source: int) -> None:
        comm.Recv(keys, source, PUSH)
        comm.Recv(values, source, DATA)
        table[keys] += values

    def recv_pull(source: int) -> np.ndarray:
        comm.Recv(keys, source, PULL)
        return table[keys]

    def recv_store(source: int) -> np.ndarray:
        recv_push(source)
        return ack

    phases: list[tuple[str, int, int, Callable[[], None]]] = [
        ("pull_keys_s", 2, NKEYS, lambda: (comm.Send(keys, SERVER, PULL), comm.Recv(values, SERVER, REPLY))),
        ("push_keys_s", 2, NKEYS, lambda: (comm.Send(keys, SERVER, PUSH), comm.Send(values, SERVER, DATA),
                                           comm.Recv(ack, SERVER, REPLY))),
    ]
    for name, nclients, per_call, body in phases:
        if rank == SERVER:
            serve(repeats * nclients, {PULL: recv_pull, PUSH: recv_store})
        elapsed = timed(nclients, body)
        if elapsed is not None:
            figures[name] = nclients * repeats * per_call / elapsed
    # one 8 MB array each way, one worker
    if rank == SERVER:
        for _ in range(repeats):
            poll(comm, 0, PULL, status)
            comm.Recv(keys[:1], 0, PULL)
            comm.Send(big, 0, REPLY)
        for _ in range(repeats):
            poll(comm, 0, PUSH, status)
            comm.Recv(keys[:1], 0, PUSH)
            comm.Recv(big, 0, DATA)
            comm.Send(ack, 0, REPLY)
    elapsed = timed(1, lambda: (comm.Send(keys[:1], SERVER, PULL), comm.Recv(big, SERVER, REPLY)))
    if elapsed is not None:
        figures["big_pull_MB_s"] = repeats * big.nbytes / 1e6 / elapsed
    elapsed = timed(1, lambda: (comm.Send(keys[:1], SERVER, PUSH), comm.Send(big, SERVER, DATA),
                                comm.Recv(ack, SERVER, REPLY)))
    if elapsed is not None:
        figures["big_push_MB_s"] = repeats * big.nbytes / 1e6 / elapsed
    # the training-shaped loop: push rows (no reply), pull them back, tick; the clock releases
    # both workers once both ticked (BSP)
    tick = np.zeros(1)

    def iteration() -> None:
        comm.Send(keys, SERVER, PUSH)
        comm.Send(values, SERVER, DATA)
        comm.Send(keys, SERVER, PULL)
        comm.Recv(values, SERVER, REPLY)
        comm.Send(tick, CLOCK, TICK)
        poll(comm, CLOCK, REPLY, status)
        comm.Recv(tick, CLOCK, REPLY)
    if rank == SERVER:
        serve(4 * repeats, {PUSH: recv_push, PULL: recv_pull})
    elif rank == CLOCK:
        for _ in range(repeats):
            for _ in range(2):
                poll(comm, MPI.ANY_SOURCE, TICK, status)
                comm.Recv(tick, status.Get_source(), TICK)
            for w in range(2):
                comm.Send(tick, w, REPLY)
    elapsed = timed(2, iteration)
    if elapsed is not None:
        figures["loop_keys_s"] = 2 * repeats * NKEYS / elapsed
    if rank == 0:
        (out / "raw.json").write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--table-keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything (paracel, then raw) this many times and print the best of each "
                             "figure: on a machine shared with other work")
    parser.add_argument("--only", choices=["table"], help="measure only this phase (it has no raw baseline)")
    parser.add_argument("--raw", help=argparse.SUPPRESS)  # internal: run as a raw-MPI rank
    args = parser.parse_args()
    if args.raw:
        raw_mpi(args.repeats, Path(args.raw))
        return
    out = Path(tempfile.mkdtemp(prefix="ps_micro-"))

    def run(folder: Path, phase: str, staleness: int | None, servers: int = 1) -> dict[str, float]:
        launch({"algorithm": "benchmarks.ps_micro:PSMicro", "staleness": staleness,
                "params": {"phase": phase, "repeats": args.repeats, "table_keys": args.table_keys},
                "output": str(folder / f"{phase}-{staleness}")}, workers=2, servers=servers, timeout=600)
        return json.loads((folder / f"{phase}-{staleness}" / f"{phase}.json").read_text())

    def measure(folder: Path) -> tuple[dict[str, float], dict[str, float]]:
        """Every figure of paracel, then of the raw baseline."""
        if args.only == "table":
            return run(folder, "table", 0, servers=TABLE_SERVERS), {}
        ours = run(folder, "basic", None) | run(folder, "cached", 2) | run(folder, "stall", None)
        ours |= {f"loop_{s}": run(folder, "loop", s)["loop_keys_s"] for s in LOOP_STALENESS}
        ours |= run(folder, "table", 0, servers=TABLE_SERVERS)
        done = run_command([mpiexec_path(), "-n", "4", sys.executable, __file__, "--raw", str(folder), "--repeats",
                            str(args.repeats)], timeout=600)
        if done.returncode != 0:
            sys.exit(f"raw MPI baseline failed:\n{done.stderr}")
        return ours, json.loads((folder / "raw.json").read_text())

    measured = [measure(out / f"round-{r}") for r in range(args.rounds)]
    best = [{key: (min if key.endswith("_ms") else max)(m[side][key] for m in measured) for key in measured[0][side]}
            for side in (0, 1)]
    ours, raw = best
    if not args.only:
        print_comparison(ours, raw)
    print(f"\n{args.table_keys:,} distinct keys x 10 f64 on 2 servers, batches of {TABLE_BATCH:,}, keys/s per server:")
    for key, label in [("table_write_keys_s", "first write"), ("table_update_keys_s", "bupdate + commit"),
                       ("table_read_keys_s", "read")]:
        print(f"  {label:50s} {ours[key]:14,.0f}")
    if args.rounds > 1:
        print(f"(each figure the best of {args.rounds} rounds{'' if args.only else ', paracel and raw alike'})")


def print_comparison(ours: dict[str, float], raw: dict[str, float]) -> None:
    """The figures that have a raw mpi4py baseline, beside it."""
    print(f"{'measure (2 workers, 1 server)':52s} {'paracel':>14s} {'raw mpi4py':>14s} {'ratio':>7s}")
    rows = [("pull_keys_s", "pull_keys_s", "batched pull, keys/s (10k x 10 f64, cache off)"),
            ("push_keys_s", "push_keys_s", "batched push, keys/s (same)"),
            ("big_pull_MB_s", "big_pull_MB_s", "pull one 8 MB array, MB/s"),
            ("big_push_MB_s", "big_push_MB_s", "push one 8 MB array, MB/s")]
    rows += [(f"loop_{s}", "loop_keys_s", f"bupdate + read + commit, keys/s, staleness {s}") for s in LOOP_STALENESS]
    for key, raw_key, label in rows:
        print(f"{label:52s} {ours[key]:14,.0f} {raw[raw_key]:14,.0f} {ours[key] / raw[raw_key]:7.1%}")
    print(f"{'reads served by the cache, keys/s (staleness 2)':52s} {ours['cached_read_keys_s']:14,.0f}")
    print(f"{'bupdate of 10k x 10 f64 returns after, ms (median)':52s} {ours['stall_bupdate_ms']:14.3f}")
    print(f"{'meanwhile the slowest read of the other worker, ms':52s} {ours['stall_read_ms']:14.3f}")


if __name__ == "__main__":
    main()

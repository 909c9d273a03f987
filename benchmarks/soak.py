"""Soak: workers drive the servers with mixed reads and updates for a bounded time; afterwards the
table must hold exactly what the workers added, and the servers' memory must be flat.

    python benchmarks/soak.py [--seconds 60] [--keys 1000000] [--workers 4] [--servers 2]

Every worker first writes zeros to its share of ``--keys`` int keys (rows of 2 int64). Then, each
round at staleness 2: a batched update of ``--batch`` random keys with random int deltas, a read of
``--batch`` other random keys, on every 5th round a synchronous update of a str counter of its
own, and ``iter_commit``; every 10 rounds the workers agree whether the time is up. Each worker
keeps what it added; at the end the sum over the workers is compared with every key's value on
the servers (ints: exact). Meanwhile this script samples each server rank's ``VmRSS`` and
``VmHWM`` from ``/proc/<pid>/status`` (a rank's ``PMI_RANK`` tells the servers apart).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paracel import launch, paralg  # noqa: E402
from paracel.params import NonNegativeInt, PositiveFloat, PositiveInt  # noqa: E402

WIDTH = 2  # int64 per value
WRITE_BATCH = 100_000
AGREE_EVERY = 10  # rounds between the workers' "is the time up?" votes
COUNTER_EVERY = 5  # rounds between synchronous updates of a worker's str counter
STARTED, ENDED = "soak-started", "soak-ended"  # worker 0 touches them in the output folder: the timed rounds


class Soak(paralg):
    """The soak's workload; worker 0 writes ``soak.json`` (ops, rounds, exactness)."""

    def __init__(self, keys: PositiveInt = 1_000_000, seconds: PositiveFloat = 60.0, batch: PositiveInt = 5_000,
                 seed: NonNegativeInt = 0):
        self.keys, self.seconds, self.batch, self.seed = keys, seconds, batch, seed

    def solve(self) -> None:
        worker, nworkers = self.get_worker_id(), self.get_worker_size()
        mine = np.arange(worker, self.keys, nworkers)
        for part in np.array_split(mine, -(-len(mine) // WRITE_BATCH)):
            self.paracel_write_multi(part, np.zeros((len(part), WIDTH), np.int64))
        self.paracel_write(f"count-{worker}", 0)
        self.sync()
        if worker == 0:
            (self.output_dir / STARTED).touch()
        added, rounds, elapsed = self._rounds(np.random.default_rng([self.seed, worker]))
        if worker == 0:
            (self.output_dir / ENDED).touch()
        self.sync()
        expected = self.allreduce(added)
        stored = np.concatenate([self.paracel_read_multi(part, as_array=True)
                                 for part in np.array_split(mine, -(-len(mine) // WRITE_BATCH))])
        wrong_rows = int((stored != expected[mine]).any(axis=1).sum())
        wrong_rows += int(self.paracel_read(f"count-{worker}") != rounds // COUNTER_EVERY)
        totals = self.allreduce(np.array([wrong_rows, rounds, 2 * self.batch * rounds, rounds // COUNTER_EVERY]))
        slowest = self.allreduce(np.array([elapsed]), op="max")[0]
        if worker == 0:
            wrong, all_rounds, keys_moved, counter_updates = totals.tolist()
            (self.output_dir / "soak.json").write_text(json.dumps({
                "exact": wrong == 0, "wrong_values": wrong, "rounds": all_rounds, "seconds": slowest,
                "keys_per_s": keys_moved / slowest, "requests_per_s": (2 * all_rounds + counter_updates) / slowest,
                "keys": self.keys, "workers": nworkers}))

    def _rounds(self, rng: np.random.Generator) -> tuple[np.ndarray, int, float]:
        """Run rounds until the workers agree the time is up; returns what this worker added
        to every key, its rounds, and its seconds."""
        added = np.zeros((self.keys, WIDTH), np.int64)
        start, rounds = time.perf_counter(), 0
        while True:
            keys = rng.integers(0, self.keys, self.batch)
            deltas = rng.integers(-3, 4, (self.batch, WIDTH))
            self.paracel_bupdate_multi(keys, deltas)
            np.add.at(added, keys, deltas)
            self.paracel_read_multi(rng.integers(0, self.keys, self.batch), as_array=True)
            rounds += 1
            if rounds % COUNTER_EVERY == 0:
                self.paracel_update(f"count-{self.get_worker_id()}", 1)
            self.iter_commit()
            if rounds % AGREE_EVERY == 0:
                late = self.allreduce(np.array([time.perf_counter() - start >= self.seconds], np.int64), op="max")
                if late[0]:
                    return added, rounds, time.perf_counter() - start


def server_pids(output: Path, workers: int, servers: int) -> dict[int, int]:
    """{MPI rank: pid} of the job's server ranks (those whose command line names ``output``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or str(output) not in (entry / "cmdline").read_text(errors="replace"):
                continue
            env = dict(line.split("=", 1) for line in (entry / "environ").read_text(errors="replace").split("\0")
                       if "=" in line)
        except OSError:  # gone meanwhile, or not ours
            continue
        rank = int(env.get("PMI_RANK", -1))
        if workers <= rank < workers + servers:
            found[rank] = int(entry.name)
    return found


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of ``pid`` in kB, or None once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def soak(seconds: float, keys: int, workers: int, servers: int, batch: int, every: float = 1.0) -> dict:
    """Run the soak; returns worker 0's figures plus each server's memory samples until the
    timed rounds end, ``[(seconds since they began, VmRSS kB, VmHWM kB), ...]``."""
    output = Path(tempfile.mkdtemp(prefix="soak-"))
    config = {"algorithm": "benchmarks.soak:Soak", "staleness": 2, "output": str(output),
              "params": {"keys": keys, "seconds": seconds, "batch": batch}}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            launch(config, workers=workers, servers=servers, timeout=seconds + 600)
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    job = threading.Thread(target=run)
    job.start()
    samples: dict[int, list[tuple[float, int, int]]] = {}
    pids: dict[int, int] = {}
    started = None
    while job.is_alive() and not (output / ENDED).exists():
        time.sleep(every)
        if len(pids) < servers:
            pids = server_pids(output, workers, servers)
        if started is None and (output / STARTED).exists():
            started = time.monotonic()
        for rank, pid in pids.items():
            memory = memory_kb(pid)
            if memory is not None:
                since = time.monotonic() - started if started is not None else -1.0
                samples.setdefault(rank, []).append((since, *memory))
    job.join()
    if failure:
        raise failure[0]
    return {**json.loads((output / "soak.json").read_text()), "memory": samples}


def report(result: dict, warmup: float) -> None:
    print(f"{result['workers']} workers, {len(result['memory'])} servers, {result['keys']:,} keys, "
          f"{result['seconds']:.1f} s, {result['rounds']:,} rounds")
    print(f"  table equals the workers' totals: {'yes, exactly' if result['exact'] else 'NO'} "
          f"({result['wrong_values']} wrong values)")
    print(f"  {result['keys_per_s']:,.0f} keys/s read or updated; {result['requests_per_s']:,.0f} read/update "
          f"calls/s (all workers)")
    for rank, series in sorted(result["memory"].items()):
        timed = [s for s in series if s[0] >= warmup]
        peak = max(hwm for _, _, hwm in series) / 1024
        print(f"  server rank {rank}: peak {peak:.1f} MB (VmHWM); RSS MB over time (s):")
        shown = timed[::max(1, len(timed) // 10)]
        shown += timed[-1:] if timed and shown[-1] is not timed[-1] else []
        print("    " + "  ".join(f"{t:.0f}s:{rss / 1024:.1f}" for t, rss, _ in shown))
        if len(timed) >= 2:
            growth = (timed[-1][1] - timed[0][1]) / 1024
            print(f"    after warm-up ({warmup:.0f} s): {growth:+.1f} MB "
                  f"({growth * 1024 / timed[0][1]:+.1%}) from {timed[0][1] / 1024:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the timed rounds")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5_000, help="keys per update and per read")
    args = parser.parse_args()
    result = soak(args.seconds, args.keys, args.workers, args.servers, args.batch)
    report(result, warmup=0.2 * args.seconds)
    if not result["exact"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""MB/s of ``paracel.loading.load`` beside single-process readers, measured in the same run.

    python benchmarks/load.py [--repeat 5]

Runs the baselines (sklearn ``load_svmlight_file``, ``numpy.loadtxt``, ``pandas.read_csv``)
in this process and ``load`` under ``mpiexec -n 1`` and ``-n 2`` (the time of the slowest
worker, from a barrier before to a barrier after; best of ``--repeat``). MB = 10**6 bytes of
input text. Inputs: a9a (LIBSVM), MovieLens u.data and u.data concatenated 20 times (ratings).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def baselines(inputs: dict[str, tuple[Path, str]], repeat: int) -> dict[tuple[str, str], float]:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_svmlight_file
    out = {}
    for name, (path, fmt) in inputs.items():
        if fmt == "libsvm":
            out[name, "sklearn load_svmlight_file"] = best(lambda: load_svmlight_file(str(path)), repeat)
        else:
            out[name, "pandas read_csv"] = best(lambda: pd.read_csv(
                path, sep="\t", header=None, names=["user", "item", "rating", "time"],
                dtype={"user": np.int64, "item": np.int64, "rating": np.float64,
                       "time": np.int64}), repeat)
            if path.stat().st_size < 10**7:  # loadtxt is too slow to wait for on the big file
                out[name, "numpy loadtxt"] = best(lambda: np.loadtxt(path), repeat)
    return out


def worker(inputs: dict[str, tuple[Path, str]], repeat: int) -> None:
    """Runs under mpiexec: rank 0 prints {input: seconds} of the slowest worker, best of repeat."""
    from mpi4py import MPI

    from paracel.loading import load
    comm = MPI.COMM_WORLD
    result = {}
    for name, (path, fmt) in inputs.items():
        times = []
        for _ in range(repeat):
            comm.Barrier()
            t = time.perf_counter()
            load(path, comm=comm, fmt=fmt)
            times.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
        result[name] = min(times)
    if comm.Get_rank() == 0:
        print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        inputs = {k: (Path(p), f) for k, (p, f) in json.loads(args.worker).items()}
        return worker(inputs, args.repeat)

    from paracel.launch import mpiexec_path
    with tempfile.TemporaryDirectory() as tmp:
        udata = DATA / "movielens-100k" / "u.data"
        big = Path(tmp) / "u.data.x20"
        big.write_bytes(udata.read_bytes() * 20)
        inputs = {"a9a (libsvm)": (DATA / "a9a" / "a9a", "libsvm"),
                  "u.data (ratings)": (udata, "ratings"),
                  "u.data x20 (ratings)": (big, "ratings")}
        seconds = baselines(inputs, args.repeat)
        spec = json.dumps({k: (str(p), f) for k, (p, f) in inputs.items()})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for w in (1, 2):
            proc = subprocess.run([mpiexec_path(), "-n", str(w), sys.executable, __file__,
                                   "--repeat", str(args.repeat), "--worker", spec],
                                  capture_output=True, text=True, env=env, timeout=600)
            if proc.returncode:
                raise SystemExit(proc.stderr)
            for name, t in json.loads(proc.stdout).items():
                seconds[name, f"paracel load, {w} worker{'s' * (w > 1)}"] = t
        print(f"{'input':22} {'MB':>6}  {'reader':32} {'MB/s':>8}  {'vs best baseline':>16}")
        for name, (path, _) in inputs.items():
            mb = path.stat().st_size / 1e6
            rows = {r: t for (n, r), t in seconds.items() if n == name}
            base = min(t for r, t in rows.items() if not r.startswith("paracel"))
            for reader, t in rows.items():
                print(f"{name:22} {mb:6.1f}  {reader:32} {mb / t:8.1f}  {base / t:15.2f}x")


if __name__ == "__main__":
    main()

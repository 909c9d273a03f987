"""Online MF on a stream: records/s per worker with 1 and 2 workers beside river's single-process
online MF on the same stream, and the latency from a record's arrival to its update being
visible on the servers.

Run from the repository root: ``python benchmarks/stream.py`` (needs ``river``, a
benchmark-only dependency: ``pip install -e '.[bench]'``). The stream is MovieLens 100K
``u.data`` replayed in timestamp order, evaluated prequentially (each rating predicted before
it is learnt) by every system:

* river's ``reco.BiasedMF`` (rank 10, plain SGD with the same steps and penalties as
  ``configs/online_mf.json``), ``predict_one`` then ``learn_one`` per rating in one process;
* ``configs/online_mf.json`` on 1 and 2 workers and 1 server, started as a user starts it.
  Records/s per worker are a worker's records over the time its stream ran (from the first
  record read to the last push applied); the job's wall time includes MPI start-up. The
  latency runs from the moment a worker read a record to the moment the server's answer to the
  flush after the record's push came back (so the update was applied): the workers' mean
  median and their largest p99.

Medians of ``--repeats`` runs.
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
DATA = ROOT.parent / "shared" / "data" / "movielens-100k" / "u.data"
CONFIG = ROOT / "configs" / "online_mf.json"

from paracel import launch  # noqa: E402


def timestamp_order() -> np.ndarray:
    """``user item rating time`` rows of u.data, stably sorted by time (the stream's order)."""
    rows = np.loadtxt(DATA, dtype=np.int64)
    return rows[np.argsort(rows[:, 3], kind="stable")]


def tail_rmse(ratings: np.ndarray, predictions: np.ndarray, tail: float) -> float:
    start = int(np.floor((1 - tail) * len(ratings)))
    return float(np.sqrt(np.mean((predictions[start:] - ratings[start:]) ** 2)))


def river_run(rows: np.ndarray, params: dict) -> tuple[float, float]:
    """(records/s, prequential RMSE of the tail) of river's BiasedMF over the stream."""
    from river import optim, reco

    model = reco.BiasedMF(n_factors=params["rank"], bias_optimizer=optim.SGD(params["learning_rate"]),
                          latent_optimizer=optim.SGD(params["learning_rate"]), l2_bias=params["reg_bias"],
                          l2_latent=params["reg"],
                          latent_initializer=optim.initializers.Normal(sigma=params["init_std"], seed=params["seed"]))
    predictions = np.empty(len(rows))
    stream = [(str(u), str(i), float(r)) for u, i, r, _ in rows.tolist()]
    start = time.perf_counter()
    for n, (user, item, rating) in enumerate(stream):
        predictions[n] = model.predict_one(user, item)
        model.learn_one(user, item, rating)
    seconds = time.perf_counter() - start
    return len(rows) / seconds, tail_rmse(rows[:, 2].astype(float), np.clip(predictions, 1, 5), params["tail"])


def paracel_run(workers: int, out: Path) -> dict[str, float]:
    """Figures of ``configs/online_mf.json`` on ``workers`` workers and 1 server."""
    start = time.perf_counter()
    stream = {**json.loads(CONFIG.read_text())["params"]["stream"], "input": str(DATA)}
    launch(CONFIG, workers=workers, servers=1, output=out, overrides=[f"params.stream={json.dumps(stream)}"],
           progress="quiet", timeout=600)
    wall = time.perf_counter() - start
    stats = [json.loads((out / f"stream_{w}.json").read_text()) for w in range(workers)]
    summary = dict(line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())
    return {"per_worker": float(np.mean([s["records"] / s["seconds"] for s in stats])),
            "total": sum(s["records"] for s in stats) / max(s["seconds"] for s in stats),
            "wall": wall, "rmse": float(summary["tail_rmse"]), "mean_rmse": float(summary["tail_mean_rmse"]),
            "median_ms": float(np.mean([s["latency_ms_median"] for s in stats])),
            "p99_ms": max(s["latency_ms_p99"] for s in stats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each system (medians are printed)")
    args = parser.parse_args()
    params = json.loads(CONFIG.read_text())["params"]
    rows = timestamp_order()
    river = [river_run(rows, params) for _ in range(args.repeats)]
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for workers in runs:
                runs[workers].append(paracel_run(workers, Path(tmp) / f"w{workers}-{repeat}"))

    def med(values: list[float]) -> float:
        return float(np.median(values))

    print(f"online MF, MovieLens 100K u.data in timestamp order ({len(rows)} ratings), rank {params['rank']}; "
          f"medians of {args.repeats} runs")
    print(f"{'system':<30} {'rec/s/worker':>12} {'rec/s total':>12} {'wall s':>7} {'tail RMSE':>9} "
          f"{'latency median / p99 ms':>24}")
    river_rate = med([r for r, _ in river])
    print(f"{'river BiasedMF, 1 process':<30} {river_rate:>12,.0f} {river_rate:>12,.0f} {'':>7} "
          f"{med([e for _, e in river]):>9.4f} {'-':>24}")
    for workers, figures in runs.items():
        fig = {key: med([f[key] for f in figures]) for key in figures[0]}
        name = f"paracel, {workers} worker{'s' if workers > 1 else ''} + 1 server"
        print(f"{name:<30} {fig['per_worker']:>12,.0f} {fig['total']:>12,.0f} {fig['wall']:>7.2f} {fig['rmse']:>9.4f} "
              f"{fig['median_ms']:>13.1f} / {fig['p99_ms']:.1f}")
    print(f"prequential global mean, tail RMSE: {runs[1][0]['mean_rmse']:.4f}")


if __name__ == "__main__":
    main()

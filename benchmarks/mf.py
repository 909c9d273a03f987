"""MF by SGD on MovieLens 100K u1: time to reach Surprise's SVD test RMSE, beside Surprise itself.

Run from the repository root: ``python benchmarks/mf.py`` (needs ``scikit-surprise``, a
benchmark-only dependency). Surprise's default ``SVD`` (100 factors, 20 epochs) is trained on
``u1.base`` and scored on ``u1.test``; its RMSE is the target. Then ``configs/mf.json`` runs
with 1 and 2 workers under staleness 0, 2 and unbounded; for each we print the training time
until the first round whose test RMSE reaches the target (the slowest worker's clock, from the
end of loading), the whole job's wall time (MPI start, loading and output included), and the
final test RMSE. ``--splits`` adds the test RMSE of the shipped MF and ALS configs on the five
splits u1..u5 (2 workers) and their means.
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
DATA = ROOT.parent / "shared" / "data" / "movielens-100k"

from paracel import launch  # noqa: E402


def surprise_svd(seed: int, repeats: int) -> tuple[float, float]:
    """(median fit seconds, test RMSE) of Surprise's default SVD on u1."""
    from surprise import SVD, Dataset, Reader, accuracy
    from surprise.model_selection import PredefinedKFold

    reader = Reader(line_format="user item rating timestamp", sep="\t")
    data = Dataset.load_from_folds([(str(DATA / "u1.base"), str(DATA / "u1.test"))], reader)
    trainset, testset = next(PredefinedKFold().split(data))
    times = []
    for _ in range(repeats):
        algo = SVD(random_state=seed)
        start = time.perf_counter()
        algo.fit(trainset)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(accuracy.rmse(algo.test(testset), verbose=False))


def paracel_mf(workers: int, staleness: int | None, target: float, rounds: int) -> dict[str, float]:
    """Run configs/mf.json once on u1; time to ``target``, job wall time and final RMSE."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        launch(ROOT / "configs" / "mf.json", workers=workers, servers=1, staleness=staleness,
               overrides=[f"params.rounds={rounds}"], output=out, timeout=300)
        wall = time.perf_counter() - start
        steps = [json.loads(line) for line in open(Path(out) / "metrics_0.jsonl")]
        summary = dict(line.split("\t") for line in (Path(out) / "summary.tsv").read_text().splitlines())
    reached = [s for s in steps if s["test_rmse"] <= target]
    return {"rounds": reached[0]["step"] + 1 if reached else float("nan"),
            "to_target": reached[0]["seconds"] if reached else float("nan"),
            "train": steps[-1]["seconds"], "wall": wall, "rmse": float(summary["test_rmse"])}


def split_table(workers: int) -> None:
    """Test RMSE of the shipped MF and ALS configs on u1..u5 and their means."""
    print(f"\nshipped configs, {workers} workers: test RMSE on MovieLens 100K splits")
    print(f"{'algorithm':<10}" + "".join(f"{'u' + str(n):>9}" for n in range(1, 6)) + f"{'mean':>9}")
    for name in ("mf", "als"):
        scores = []
        for n in range(1, 6):
            with tempfile.TemporaryDirectory() as out:
                launch(ROOT / "configs" / f"{name}.json", workers=workers, servers=1, output=out, timeout=300,
                       overrides=[f"params.train={DATA / f'u{n}.base'}", f"params.test={DATA / f'u{n}.test'}"])
                text = (Path(out) / "summary.tsv").read_text()
            scores.append(float(dict(line.split("\t") for line in text.splitlines())["test_rmse"]))
        print(f"{name.upper():<10}" + "".join(f"{x:>9.4f}" for x in scores) + f"{np.mean(scores):>9.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="SGD rounds per paracel run")
    parser.add_argument("--seed", type=int, default=0, help="Surprise's random_state")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; medians are printed")
    parser.add_argument("--splits", action="store_true", help="also print MF and ALS test RMSE on u1..u5")
    args = parser.parse_args()

    svd_seconds, target = surprise_svd(args.seed, args.repeats)
    print(f"MovieLens 100K u1.base -> u1.test; target = Surprise SVD test RMSE {target:.4f}\n")
    print(f"{'system':<28}{'to target (s)':>14}{'rounds':>8}{'train (s)':>11}{'job wall (s)':>14}"
          f"{'final RMSE':>12}{'speed-up':>10}")
    print(f"{'Surprise SVD (1 process)':<28}{svd_seconds:>14.3f}{20:>8}{svd_seconds:>11.3f}"
          f"{'-':>14}{target:>12.4f}{'1.0x':>10}")
    for workers in (1, 2):
        for staleness in (0, 2, None):
            runs = [paracel_mf(workers, staleness, target, args.rounds) for _ in range(args.repeats)]
            r = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
            name = f"paracel MF w={workers} s={'inf' if staleness is None else staleness}"
            speedup = svd_seconds / r["to_target"] if np.isfinite(r["to_target"]) else float("nan")
            print(f"{name:<28}{r['to_target']:>14.3f}{r['rounds']:>8.0f}{r['train']:>11.3f}"
                  f"{r['wall']:>14.2f}{r['rmse']:>12.4f}{speedup:>9.1f}x", flush=True)
    print(f"\nmedians of {args.repeats} runs. to target: training time (slowest worker, after loading) until the first round at or"
          "\nbelow the target; speed-up = Surprise fit time / that. job wall includes MPI start-up,"
          "\nloading and writing outputs (Surprise's excludes its data loading).")
    if args.splits:
        split_table(workers=2)


if __name__ == "__main__":
    main()

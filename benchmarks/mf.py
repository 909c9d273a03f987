"""MF (SGD, SVD++ term) on MovieLens 100K u1: the headline job and time to Surprise's RMSE, beside Surprise.

Run from the repository root: ``python benchmarks/mf.py`` (needs ``scikit-surprise``, a
benchmark-only dependency). Surprise's ``SVD`` and ``SVDpp`` (defaults) are trained on
``u1.base`` and scored on ``u1.test`` in the same run (fit time only). Then:

* the headline: ``prun -w 2 -p 2 -c configs/mf.json`` as a user runs it (a subprocess; wall
  time of the whole job, MPI start-up, loading and outputs included) and its test RMSE, beside
  Paracel's published figures for its own MF with the same settings on u1;
* ``configs/mf.json`` with 1 server and each of ``--workers`` under staleness 0, 2 and
  unbounded: the training time until the first round whose test RMSE reaches Surprise's SVD
  (the slowest worker's clock, from the end of loading), the whole training, the job's wall
  time and the final test RMSE.

``--splits`` adds the test RMSE of the shipped MF and ALS configs (and plain MF, without the
implicit term) on u1..u5 (2 workers) and their means; ``--variants`` the u1 test RMSE of the method
variants tried for MF (the table in ``algorithms/README.md``). Medians of ``--repeats`` runs,
with the range where it matters.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "movielens-100k"
#: Paracel's own MF on u1 with these settings (rank 50, 2 workers, 2 servers, staleness 2),
#: quoted in issue 15: (job wall seconds, test RMSE).
PARACEL_CPP = (20.6, 0.918)
#: The configs/mf.json overrides of each variant of the method tried on u1 (``--variants``).
PLAIN = "plain MF, issue-5 settings"
VARIANTS = {
    PLAIN: ["params.implicit=false", "params.learning_rate=0.03", "params.decay=0.9", "params.reg=0.08",
            "params.init_std=0.1"],
    "plain MF, tuned": ["params.implicit=false"],
    "SVD++, y step = factor step": ["params.learning_rate_implicit=0.02"],
    "SVD++, init_std 0.1": ["params.init_std=0.1"],
    "SVD++, reg 0.1": ["params.reg=0.1"],
    "SVD++, 25 rounds": ["params.rounds=25"],
    "SVD++ (shipped)": [],
}

from paracel import launch  # noqa: E402


def surprise_fit(name: str, seed: int, repeats: int) -> tuple[float, float]:
    """(median fit seconds, test RMSE) of Surprise's ``name`` ("SVD" or "SVDpp") on u1."""
    import surprise
    from surprise.model_selection import PredefinedKFold

    reader = surprise.Reader(line_format="user item rating timestamp", sep="\t")
    data = surprise.Dataset.load_from_folds([(str(DATA / "u1.base"), str(DATA / "u1.test"))], reader)
    trainset, testset = next(PredefinedKFold().split(data))
    times = []
    for _ in range(repeats):
        algo = getattr(surprise, name)(random_state=seed)
        start = time.perf_counter()
        algo.fit(trainset)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(surprise.accuracy.rmse(algo.test(testset), verbose=False))


def spread(values: list[float] | tuple[float, ...], fmt: str, width: int = 12) -> str:
    """The median (8 characters) and the range (``width``) of ``values``, right-aligned."""
    median, lo, hi = (format(float(x), fmt) for x in (np.median(values), min(values), max(values)))
    return f"{median:>8}{f'{lo}-{hi}':>{width}}"


def summary(out: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())}


def headline_run() -> tuple[float, float]:
    """(wall seconds, test RMSE) of ``prun -w 2 -p 2 -c configs/mf.json``, run as a user would."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "prun.py"), "-w", "2", "-p", "2", "-c",
                        str(ROOT / "configs" / "mf.json"), "-o", out], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - start, summary(Path(out))["test_rmse"]


def paracel_mf(workers: int, staleness: int | None, target: float, overrides: list[str]) -> dict[str, float]:
    """One run of configs/mf.json on u1 with 1 server; time to ``target``, job wall time, final RMSE."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        launch(ROOT / "configs" / "mf.json", workers=workers, servers=1, staleness=staleness,
               overrides=overrides, output=out, timeout=300)
        wall = time.perf_counter() - start
        steps = [json.loads(line) for line in open(Path(out) / "metrics_0.jsonl")]
        rmse = summary(Path(out))["test_rmse"]
    reached = [s for s in steps if s["test_rmse"] <= target]
    return {"rounds": reached[0]["step"] + 1 if reached else float("nan"),
            "to_target": reached[0]["seconds"] if reached else float("nan"),
            "train": steps[-1]["seconds"], "wall": wall, "rmse": rmse}


def split_table(workers: int) -> None:
    """Test RMSE of the shipped MF and ALS configs, and of plain MF (issue 5's settings), on u1..u5."""
    print(f"\nshipped configs, {workers} workers, 1 server: test RMSE on MovieLens 100K splits")
    print(f"{'algorithm':<16}" + "".join(f"{'u' + str(n):>9}" for n in range(1, 6)) + f"{'mean':>9}")
    for name, config, extra in (("MF (SVD++)", "mf", []), ("MF, plain", "mf", VARIANTS[PLAIN]), ("ALS", "als", [])):
        scores = []
        for n in range(1, 6):
            with tempfile.TemporaryDirectory() as out:
                data = [f"params.train={DATA / f'u{n}.base'}", f"params.test={DATA / f'u{n}.test'}"]
                launch(ROOT / "configs" / f"{config}.json", workers=workers, servers=1, output=out, timeout=300,
                       overrides=data + extra)
                scores.append(summary(Path(out))["test_rmse"])
        print(f"{name:<16}" + "".join(f"{x:>9.4f}" for x in scores) + f"{np.mean(scores):>9.4f}", flush=True)


def variant_table(repeats: int) -> None:
    """u1 test RMSE of each method variant (2 workers, 1 server, staleness 2)."""
    print(f"\nmethod variants on u1, 2 workers, staleness 2 (median and range of {repeats} runs)")
    print(f"{'variant':<32}{'RMSE':>8}{'range':>16}{'train (s)':>11}")
    for name, overrides in VARIANTS.items():
        runs = [paracel_mf(2, 2, 0.0, overrides) for _ in range(repeats)]
        print(f"{name:<32}{spread([run['rmse'] for run in runs], '.4f', 16)}"
              f"{np.median([run['train'] for run in runs]):>11.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="Surprise's random_state")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; medians are printed")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts of the table")
    parser.add_argument("--splits", action="store_true", help="also print MF and ALS test RMSE on u1..u5")
    parser.add_argument("--variants", action="store_true", help="also print the u1 RMSE of the MF variants tried")
    args = parser.parse_args()

    svd_seconds, target = surprise_fit("SVD", args.seed, args.repeats)
    svdpp_seconds, svdpp_rmse = surprise_fit("SVDpp", args.seed, 1)
    walls, rmses = zip(*(headline_run() for _ in range(args.repeats)))
    print("MovieLens 100K u1.base -> u1.test\n")
    print(f"{'headline (rank 50, 2 workers, 2 servers, s=2)':<50}{'seconds':>8}{'range':>12}{'test RMSE':>11}"
          f"{'range':>16}")
    print(f"{'paracel: prun -w 2 -p 2 -c configs/mf.json (wall)':<50}{spread(walls, '.2f')}{spread(rmses, '.4f', 16)}")
    for name, seconds, rmse in (("Paracel C++ (published, wall)", *PARACEL_CPP),
                                ("Surprise SVDpp (fit only, 1 run)", svdpp_seconds, svdpp_rmse),
                                ("Surprise SVD (fit only)", svd_seconds, target)):
        print(f"{name:<50}{seconds:>8.2f}{'':>12}{rmse:>11.4f}")

    print(f"\ntarget = Surprise SVD test RMSE {target:.4f}; configs/mf.json, 1 server\n")
    print(f"{'system':<28}{'to target (s)':>14}{'rounds':>8}{'train (s)':>11}{'job wall (s)':>14}"
          f"{'final RMSE':>12}{'speed-up':>10}")
    print(f"{'Surprise SVD (1 process)':<28}{svd_seconds:>14.3f}{20:>8}{svd_seconds:>11.3f}"
          f"{'-':>14}{target:>12.4f}{'1.0x':>10}")
    for workers in args.workers:
        for staleness in (0, 2, None):
            runs = [paracel_mf(workers, staleness, target, []) for _ in range(args.repeats)]
            r = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
            name = f"paracel MF w={workers} s={'inf' if staleness is None else staleness}"
            speedup = svd_seconds / r["to_target"] if np.isfinite(r["to_target"]) else float("nan")
            print(f"{name:<28}{r['to_target']:>14.3f}{r['rounds']:>8.0f}{r['train']:>11.3f}"
                  f"{r['wall']:>14.2f}{r['rmse']:>12.4f}{speedup:>9.1f}x", flush=True)
    print(f"\nmedians of {args.repeats} runs. to target: training time (slowest worker, after loading) until"
          "\nthe first round at or below the target; speed-up = Surprise fit time / that. job wall includes"
          "\nMPI start-up, loading and writing outputs (Surprise's excludes its data loading).")
    if args.splits:
        split_table(workers=2)
    if args.variants:
        variant_table(args.repeats)


if __name__ == "__main__":
    main()

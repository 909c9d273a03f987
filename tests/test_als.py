"""ALS: the normal-equation kernel against numpy, and quality on MovieLens."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paracel._ext import mf_kernels


@pytest.mark.parametrize("bias_feature", [1.0, 0.0])
def test_normal_equations_match_numpy(bias_feature: float) -> None:
    rng = np.random.default_rng(0)
    n_rows, n_cols, n, k = 5, 8, 60, 3
    rows = rng.integers(0, n_rows - 1, n).astype(np.int32)  # the last row gets no ratings
    cols = rng.integers(0, n_cols, n).astype(np.int32)
    ratings = rng.integers(1, 6, n).astype(np.float64)
    other = rng.normal(0, 0.5, (n_cols, k + 1))
    A, b, cnt = mf_kernels.als_normal_equations(rows, cols, ratings, other, n_rows, 3.2, bias_feature)
    for row in range(n_rows):
        sel = rows == row
        Y = np.hstack([other[cols[sel], :k], np.full((sel.sum(), 1), bias_feature)])
        target = ratings[sel] - 3.2 - other[cols[sel], k]
        np.testing.assert_allclose(A[row], Y.T @ Y, atol=1e-12)
        np.testing.assert_allclose(b[row], Y.T @ target, atol=1e-12)
        assert cnt[row] == sel.sum()
    assert cnt[-1] == 0 and not A[-1].any()


def test_normal_equations_reject_bad_row() -> None:
    one = np.ones(1)
    with pytest.raises(IndexError, match="row index 3"):
        mf_kernels.als_normal_equations(np.array([3], np.int32), np.array([0], np.int32), one,
                                        np.zeros((1, 2)), 3, 0.0, 1.0)


def test_solve_rows_minimises_the_weighted_lambda_objective() -> None:
    from paracel._ext.mf_kernels import solve_rows

    rng = np.random.default_rng(1)
    n_rows, n_cols, k, lam, mu = 4, 6, 2, 0.3, 3.0
    rows = np.repeat(np.arange(n_rows - 1), 5).astype(np.int32)  # the last row has no ratings
    cols = rng.integers(0, n_cols, rows.size).astype(np.int32)
    ratings = rng.integers(1, 6, rows.size).astype(np.float64)
    other = rng.normal(0, 0.5, (n_cols, k + 1))
    X = solve_rows(rows, cols, ratings, other, n_rows, mu, lam)

    def objective(row: int, x: np.ndarray) -> float:
        sel = rows == row
        pred = mu + x[k] + other[cols[sel], k] + other[cols[sel], :k] @ x[:k]
        return float(np.sum((ratings[sel] - pred) ** 2) + lam * sel.sum() * (x @ x))

    for row in range(n_rows - 1):
        best = objective(row, X[row])
        for _ in range(20):  # the solution beats every nearby point: it is the minimum
            assert best < objective(row, X[row] + rng.normal(0, 1e-3, k + 1))
    np.testing.assert_array_equal(X[-1], 0.0)


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "als.json"
ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-100k"


def test_als_on_u1_is_the_same_on_one_and_two_workers(tmp_path: Path) -> None:
    """ALS is deterministic given the seed, so splitting users and items over 2 workers must
    reproduce the single-worker model; and it beats Surprise's SVD on u1 (0.951)."""
    from paracel import launch

    results = []
    for workers in (1, 2):
        out = launch(CONFIG, workers=workers, servers=1, output=tmp_path / f"w{workers}", timeout=120).output_dir
        rmse = dict(line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())["test_rmse"]
        rows = np.concatenate([np.loadtxt(p, ndmin=2) for p in sorted(out.glob("predictions_*.tsv"))])
        results.append((float(rmse), rows[np.lexsort((rows[:, 1], rows[:, 0]))]))
    (rmse1, pred1), (rmse2, pred2) = results
    assert rmse1 < 0.935
    assert rmse2 == pytest.approx(rmse1, abs=1e-6)
    assert len(pred1) == 20000
    np.testing.assert_allclose(pred2, pred1, atol=1e-6)


def test_als_stops_with_the_round_when_its_error_is_not_finite(tmp_path: Path) -> None:
    """Ratings near the float64 limit overflow the squared error: the job fails naming the
    round, instead of writing a model."""
    from paracel import JobFailed, launch

    (tmp_path / "train.tsv").write_text("".join(f"{u}\t{i}\t{(-1) ** (u + i) * 1e200}\n"
                                                for u in range(1, 6) for i in range(1, 5)))
    config = {"algorithm": "paracel.algorithms.als:ALS", "output": str(tmp_path / "out"),
              "params": {"train": str(tmp_path / "train.tsv"), "rank": 2, "rounds": 2}}
    with pytest.raises(JobFailed) as failed:
        launch(config, workers=2, servers=1, timeout=120)
    assert "ALS diverged in round 0" in str(failed.value) + failed.value.output
    assert not list((tmp_path / "out").glob("*_factors_*.txt"))

"""Ridge regression by distributed CG against numpy's closed-form solution on real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from paracel.algorithms.ridge import one_hot_ratings, with_intercept
from paracel.errors import JobFailed
from paracel.launch import launch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
U1_BASE = DATA / "movielens-100k" / "u1.base"
A9A = DATA / "a9a" / "a9a"


def closed_form(Z: sp.spmatrix, y: np.ndarray, lam: float, fit_intercept: bool) -> np.ndarray:
    """``v = (Z^T Z + n lam D)^-1 Z^T y`` by numpy's dense solve (D spares the intercept)."""
    penalty = np.full(Z.shape[1], len(y) * lam)
    if fit_intercept:
        penalty[0] = 0.0
    gram = (Z.T @ Z).toarray() + np.diag(penalty)
    return np.linalg.solve(gram, Z.T @ y)


@pytest.fixture(scope="module")
def u1_solution() -> np.ndarray:
    d = np.loadtxt(U1_BASE, dtype=np.int64, usecols=(0, 1, 2))
    X = one_hot_ratings(d[:, 0], d[:, 1], (d[:, 0].max() + 1, d[:, 1].max() + 1))
    return closed_form(with_intercept(X), d[:, 2].astype(np.float64), 1e-4, True)


def _job(tmp_path: Path, **params) -> dict:
    return {"algorithm": "paracel.algorithms.ridge:Ridge", "staleness": 0, "output": str(tmp_path),
            "params": params}


def _summary(out: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())}


def test_one_hot_rows_name_user_and_item_columns() -> None:
    X = one_hot_ratings(np.array([1, 3]), np.array([2, 0]), (4, 3))
    assert X.shape == (2, 7)
    np.testing.assert_array_equal(X.toarray(), [[0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(with_intercept(X).toarray()[:, 0], [1, 1])


@pytest.mark.parametrize("workers,staleness", [(1, 0), (2, 2), (4, None)])
def test_u1_ratings_match_closed_form(u1_solution, tmp_path, workers, staleness) -> None:
    """The rating on one-hot user + item features of MovieLens u1.base: rel. error < 1e-4."""
    out = launch(_job(tmp_path, input=str(U1_BASE), lam=1e-4), workers=workers, servers=1,
                 staleness=staleness, timeout=120).output_dir
    w, summary = np.load(out / "coefficients_0.npy"), _summary(out)
    rel = np.linalg.norm(w - u1_solution[1:]) / np.linalg.norm(u1_solution[1:])
    print(f"ridge u1 W={workers}: rel. error {rel:.2e}, {summary['rounds']:.0f} rounds")
    assert rel < 1e-4
    assert summary["intercept"] == pytest.approx(u1_solution[0], rel=1e-6)
    assert summary["rounds"] <= 60
    steps = [line for line in (out / "metrics_0.jsonl").read_text().splitlines()]
    assert len(steps) == summary["rounds"]


def test_a9a_libsvm_without_intercept_matches_closed_form(tmp_path) -> None:
    """The ±1 label of a9a on its 123 binary features, no intercept, 2 workers and 2 servers."""
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(A9A), n_features=123)
    ref = closed_form(sp.csr_matrix(X), y, 1e-3, False)
    out = launch(_job(tmp_path, input=str(A9A), fmt="libsvm", n_features=123, lam=1e-3, fit_intercept=False),
                 workers=2, servers=2, timeout=120).output_dir
    w = np.load(out / "coefficients_0.npy")
    assert np.linalg.norm(w - ref) / np.linalg.norm(ref) < 1e-4
    assert _summary(out)["intercept"] == 0.0


def test_unconverged_run_fails_and_writes_no_model(tmp_path) -> None:
    with pytest.raises(JobFailed, match="did not reach tol"):
        launch(_job(tmp_path, input=str(U1_BASE), max_iter=3), workers=2, servers=1, timeout=120)
    assert not (tmp_path / "coefficients_0.npy").exists()


def test_non_finite_target_fails_and_writes_no_model(tmp_path) -> None:
    data = tmp_path / "nan.svm"
    data.write_text("1 1:2 2:3\nnan 1:1\n2 2:1\n")
    with pytest.raises(JobFailed, match="non-finite"):
        launch(_job(tmp_path / "out", input=str(data), fmt="libsvm"), workers=2, servers=1, timeout=120)
    assert not (tmp_path / "out" / "coefficients_0.npy").exists()

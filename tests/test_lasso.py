"""Shotgun Lasso against scikit-learn's Lasso on real data (diabetes, a9a), with real ranks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paracel._ext.linear_kernels import pick_block
from paracel.algorithms.lasso import lasso_gap, soft_threshold
from paracel.errors import JobFailed
from paracel.launch import launch

A9A = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "a9a" / "a9a"


def sklearn_lasso(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """scikit-learn's coefficients (fit_intercept=True, tight tol) and its objective."""
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    r = y - X @ model.coef_ - model.intercept_
    return model.coef_, float(r @ r / (2 * len(y)) + alpha * np.abs(model.coef_).sum())


def support(w: np.ndarray) -> np.ndarray:
    """Indices of the nonzero coefficients; |w| below 1e-9 of the largest counts as zero
    (scikit-learn leaves ~1e-15 rounding residue where the exact solution has zeros)."""
    return np.flatnonzero(np.abs(w) > 1e-9 * np.abs(w).max())


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    return path, X, y


@pytest.fixture(scope="module")
def a9a() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(A9A), n_features=123)
    return X.toarray(), y


def _job(tmp_path: Path, **params) -> dict:
    return {"algorithm": "paracel.algorithms.lasso:Lasso", "staleness": 0, "output": str(tmp_path),
            "params": params}


def _result(out: Path, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float, list[float]]:
    """Our coefficients, their objective recomputed here, and the logged objectives per round."""
    w = np.load(out / "coefficients_0.npy")
    summary = dict(line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())
    intercept = float(summary["intercept"])
    r = y - X @ w - intercept
    steps = [json.loads(line)["objective"] for line in (out / "metrics_0.jsonl").read_text().splitlines()]
    return w, float(r @ r / (2 * len(y)) + alpha * np.abs(w).sum()), steps


def test_soft_threshold() -> None:
    np.testing.assert_array_equal(soft_threshold(np.array([-3.0, -0.5, 0.0, 0.5, 2.0]), 1.0),
                                  [-2.0, 0.0, 0.0, 0.0, 1.0])


def pick_block_reference(order: np.ndarray, abs_corr: np.ndarray, size: int, max_overlap: float) -> list[int]:
    """The scheduler's rule in plain Python: take coordinates in order while every member's
    summed |correlation| with the other members stays below ``max_overlap``."""
    block: list[int] = []
    for j in order:
        trial = block + [int(j)]
        sums = abs_corr[np.ix_(trial, trial)].sum(axis=1) - abs_corr[trial, trial]
        if len(block) < size and (not block or np.all(sums < max_overlap)):
            block = trial
    return block


@pytest.mark.parametrize("seed", range(5))
def test_pick_block_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(50, 30)) + rng.normal(size=(50, 1))  # correlated columns
    A /= np.linalg.norm(A - A.mean(axis=0), axis=0)
    corr = np.ascontiguousarray(np.abs(np.corrcoef(A.T)))
    order = rng.permutation(30).astype(np.int64)
    for size, overlap in ((4, 0.5), (30, 0.9), (8, 0.2)):
        assert pick_block(order, corr, size, overlap).tolist() == pick_block_reference(order, corr, size, overlap)


def test_pick_block_rejects_bad_input() -> None:
    with pytest.raises(IndexError, match="coordinate 5"):
        pick_block(np.array([0, 5], dtype=np.int64), np.eye(3), 2, 0.5)
    with pytest.raises(ValueError, match="square"):
        pick_block(np.array([0], dtype=np.int64), np.ones((2, 3)), 2, 0.5)


def test_pick_block_keeps_order_size_and_overlap() -> None:
    corr = np.array([[1.0, 0.9, 0.1, 0.2],
                     [0.9, 1.0, 0.0, 0.1],
                     [0.1, 0.0, 1.0, 0.3],
                     [0.2, 0.1, 0.3, 1.0]])
    assert pick_block(np.array([0, 1, 2, 3], dtype=np.int64), corr, 4, 0.6).tolist() == [0, 2, 3]
    assert pick_block(np.array([1, 0, 2, 3], dtype=np.int64), corr, 4, 0.6).tolist() == [1, 2, 3]
    assert pick_block(np.array([3, 2, 1, 0], dtype=np.int64), corr, 2, 0.6).tolist() == [3, 2]
    assert pick_block(np.array([0, 2, 3], dtype=np.int64), corr, 4, 0.5).tolist() == [0, 2]  # 3 would sum 0.2 + 0.3
    # 3 alone would sum only 0.2 + 0.0, but member 0 would reach 0.1 + 0.2
    corr[2, 3] = corr[3, 2] = 0.0
    assert pick_block(np.array([0, 2, 3], dtype=np.int64), corr, 4, 0.25).tolist() == [0, 2]
    assert pick_block(np.array([0, 2, 3], dtype=np.int64), corr, 4, 0.35).tolist() == [0, 2, 3]
    assert pick_block(np.array([], dtype=np.int64), corr, 4, 0.5).tolist() == []


def test_gap_vanishes_at_the_optimum_only(diabetes_csv) -> None:
    _, X, y = diabetes_csv
    w, _ = sklearn_lasso(X, y, 0.1)
    Xc, yc = X - X.mean(axis=0), y - y.mean()
    for coef, small in ((w, True), (np.zeros_like(w), False)):
        r = yc - Xc @ coef
        gap = lasso_gap(Xc.T @ r, r @ r, r @ yc, np.abs(coef).sum(), len(y), 0.1)
        assert (gap < 1e-6) == small and gap >= -1e-9


@pytest.mark.parametrize("workers,staleness,schedule", [(1, 0, "greedy"), (2, 2, "random"), (4, None, "greedy")])
def test_diabetes_matches_sklearn(diabetes_csv, tmp_path, workers, staleness, schedule) -> None:
    """scikit-learn's bundled diabetes set (442 x 10, as CSV), alpha 0.1: 7 nonzeros."""
    path, X, y = diabetes_csv
    ref_w, ref_obj = sklearn_lasso(X, y, 0.1)
    job = _job(tmp_path, input=str(path), fmt="csv", n_features=10, alpha=0.1, block_size=4, schedule=schedule)
    out = launch(job, workers=workers, servers=1, staleness=staleness, timeout=120).output_dir
    w, obj, steps = _result(out, X, y, 0.1)
    print(f"lasso diabetes W={workers} {schedule}: objective {obj:.10g} vs sklearn {ref_obj:.10g}, "
          f"{len(steps)} rounds")
    assert abs(obj - ref_obj) <= 0.01 * ref_obj
    assert support(w).tolist() == support(ref_w).tolist()
    assert np.all(np.diff(steps) <= 1e-12 * steps[0])  # the overlap rule keeps every round a descent


@pytest.mark.parametrize("schedule", ["greedy", "random"])
def test_a9a_pm1_targets_match_sklearn(a9a, tmp_path, schedule) -> None:
    """a9a's ±1 labels on its 123 binary features, alpha 0.01 (2 workers, 2 servers).

    a9a's features are one-hot groups (each group sums to the ones column), so the Lasso
    minimiser is not unique and its support is not either (here a group of 6 columns trades
    weight between solutions of the same objective); what is unique is the fit ``X w`` and
    ``|w|_1``, and those must agree with scikit-learn's.
    """
    X, y = a9a
    ref_w, ref_obj = sklearn_lasso(X, y, 0.01)
    job = _job(tmp_path, input=str(A9A), n_features=123, alpha=0.01, schedule=schedule)
    out = launch(job, workers=2, servers=2, staleness=2, timeout=120).output_dir
    w, obj, steps = _result(out, X, y, 0.01)
    print(f"lasso a9a {schedule}: objective {obj:.10g} vs sklearn {ref_obj:.10g}, {len(steps)} rounds")
    assert abs(obj - ref_obj) <= 1e-6 * ref_obj
    fit, ref_fit = X @ w - (X @ w).mean(), X @ ref_w - (X @ ref_w).mean()
    assert np.linalg.norm(fit - ref_fit) <= 1e-6 * np.linalg.norm(ref_fit)
    assert np.abs(w).sum() == pytest.approx(np.abs(ref_w).sum(), rel=1e-6)


def test_too_few_rounds_fail_and_write_no_model(diabetes_csv, tmp_path) -> None:
    path = diabetes_csv[0]
    with pytest.raises(JobFailed, match="did not reach"):
        launch(_job(tmp_path, input=str(path), fmt="csv", n_features=10, alpha=0.1, max_rounds=2),
               workers=2, servers=1, timeout=120)
    assert not (tmp_path / "coefficients_0.npy").exists()


def test_non_finite_feature_fails_and_writes_no_model(tmp_path) -> None:
    data = tmp_path / "nan.csv"
    data.write_text("1,2,3\nnan,1,2\n3,4,5\n")
    with pytest.raises(JobFailed, match="non-finite"):
        launch(_job(tmp_path / "out", input=str(data), fmt="csv", n_features=2, alpha=0.1), workers=2, servers=1,
               timeout=120)
    assert not (tmp_path / "out" / "coefficients_0.npy").exists()

"""Matrix factorization by SGD: the Cython kernels against plain-Python references, and quality on MovieLens."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paracel._ext import mf_kernels

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-100k"


def _random_problem(seed: int, n_users: int = 7, n_items: int = 9, n: int = 40, k: int = 4):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)
    ratings = rng.integers(1, 6, n).astype(np.float64)
    U = rng.normal(0, 0.3, (n_users, k + 1))
    V = rng.normal(0, 0.3, (n_items, k + 1))
    return users, items, ratings, U, V


def _sgd_reference(users, items, ratings, order, U, V, mu, lr, reg, reg_bias):
    k = U.shape[1] - 1
    sse = 0.0
    for r in order:
        u, v = U[users[r]], V[items[r]]
        e = ratings[r] - (mu + u[k] + v[k] + float(u[:k] @ v[:k]))
        sse += e * e
        u[k] += lr * (e - reg_bias * u[k])
        v[k] += lr * (e - reg_bias * v[k])
        pu, qi = u[:k].copy(), v[:k].copy()
        u[:k] = pu + lr * (e * qi - reg * pu)
        v[:k] = qi + lr * (e * pu - reg * qi)
    return sse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_epoch_matches_reference(seed: int) -> None:
    users, items, ratings, U, V = _random_problem(seed)
    order = np.random.default_rng(seed + 10).permutation(len(ratings)).astype(np.int64)
    U_ref, V_ref = U.copy(), V.copy()
    sse_ref = _sgd_reference(users, items, ratings, order, U_ref, V_ref, 3.1, 0.05, 0.07, 0.02)
    sse = mf_kernels.sgd_epoch(users, items, ratings, order, U, V, 3.1, 0.05, 0.07, 0.02)
    assert sse == pytest.approx(sse_ref, rel=1e-12)
    np.testing.assert_allclose(U, U_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(V, V_ref, rtol=1e-12, atol=1e-14)


def test_sgd_epoch_visits_only_ordered_ratings() -> None:
    users, items, ratings, U, V = _random_problem(3)
    before_U, before_V = U.copy(), V.copy()
    order = np.array([5], dtype=np.int64)
    mf_kernels.sgd_epoch(users, items, ratings, order, U, V, 3.0, 0.1, 0.0, 0.0)
    changed_u = np.flatnonzero(np.any(U != before_U, axis=1))
    changed_v = np.flatnonzero(np.any(V != before_V, axis=1))
    assert changed_u.tolist() == [users[5]] and changed_v.tolist() == [items[5]]


def test_sgd_epoch_rejects_mismatched_rank() -> None:
    users, items, ratings, U, V = _random_problem(4)
    order = np.arange(len(ratings), dtype=np.int64)
    with pytest.raises(ValueError, match="columns"):
        mf_kernels.sgd_epoch(users, items, ratings, order, U, V[:, :-1].copy(), 3.0, 0.1, 0.0, 0.0)


def test_predict_clips_and_matches_dot_product() -> None:
    users, items, ratings, U, V = _random_problem(5)
    k = U.shape[1] - 1
    raw = 3.0 + U[users, k] + V[items, k] + np.einsum("ij,ij->i", U[users, :k], V[items, :k])
    np.testing.assert_allclose(mf_kernels.predict(users, items, U, V, 3.0), raw, rtol=1e-13)
    U[:, k] += 10.0  # push every prediction above the top of the scale
    np.testing.assert_array_equal(mf_kernels.predict(users, items, U, V, 3.0, 1.0, 5.0), 5.0)


def test_sgd_epochs_beat_the_bias_only_model_on_u1() -> None:
    """A few epochs of the kernel alone on real data: train error drops, test RMSE beats the mean."""
    base = np.loadtxt(ML100K / "u1.base", dtype=np.int64)
    test = np.loadtxt(ML100K / "u1.test", dtype=np.int64)
    u, i, r = base[:, 0].astype(np.int32), base[:, 1].astype(np.int32), base[:, 2].astype(np.float64)
    rng = np.random.default_rng(0)
    U = np.zeros((u.max() + 1, 11))
    V = np.zeros((max(i.max(), test[:, 1].max()) + 1, 11))
    U[:, :10] = rng.normal(0, 0.1, (U.shape[0], 10))
    V[:, :10] = rng.normal(0, 0.1, (V.shape[0], 10))
    mu = float(r.mean())
    sses = [mf_kernels.sgd_epoch(u, i, r, rng.permutation(len(r)), U, V, mu, 0.02, 0.08, 0.05)
            for _ in range(8)]
    assert all(b < a for a, b in zip(sses, sses[1:]))
    pred = mf_kernels.predict(test[:, 0].astype(np.int32), test[:, 1].astype(np.int32), U, V, mu, 1.0, 5.0)
    test_rmse = float(np.sqrt(np.mean((pred - test[:, 2]) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((mu - test[:, 2]) ** 2)))
    assert test_rmse < 0.96 < mean_rmse


# -- the distributed algorithm on real ranks ------------------------------------------------

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mf.json"


def read_predictions(out: Path) -> np.ndarray:
    """All workers' ``user item rating prediction`` rows, sorted by (user, item)."""
    rows = np.concatenate([np.loadtxt(p, ndmin=2) for p in sorted(out.glob("predictions_*.tsv"))])
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def run_mf(tmp_path: Path, split: str, workers: int, staleness: int | None, rounds: int) -> Path:
    from paracel import launch

    overrides = [f"params.train={ML100K / (split + '.base')}", f"params.test={ML100K / (split + '.test')}",
                 f"params.rounds={rounds}"]
    return launch(CONFIG, workers=workers, servers=1, staleness=staleness, overrides=overrides,
                  output=tmp_path / f"{split}_w{workers}", timeout=120).output_dir


def summary(out: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())}


def test_mf_two_workers_ssp_on_u1(tmp_path: Path) -> None:
    """The shipped config, 2 workers under staleness 2: beats Surprise's SVD on u1 (0.951) with
    margin, predicts every test rating exactly once, and logs a falling train RMSE."""
    out = run_mf(tmp_path, "u1", workers=2, staleness=2, rounds=30)
    rmse = summary(out)["test_rmse"]
    assert rmse < 0.932
    pred = read_predictions(out)
    truth = np.loadtxt(ML100K / "u1.test", dtype=np.int64)
    truth = truth[np.lexsort((truth[:, 1], truth[:, 0]))]
    np.testing.assert_array_equal(pred[:, :3], truth[:, :3])
    assert float(np.sqrt(np.mean((pred[:, 3] - pred[:, 2]) ** 2))) == pytest.approx(rmse, abs=1e-5)
    assert pred[:, 3].min() >= 1.0 and pred[:, 3].max() <= 5.0
    steps = [json.loads(line) for line in open(out / "metrics_0.jsonl")]
    assert [s["step"] for s in steps] == list(range(30))
    train = [s["train_rmse"] for s in steps]
    assert all(b < a for a, b in zip(train, train[1:]))
    assert steps[-1]["test_rmse"] == pytest.approx(rmse, abs=2e-3)
    items = np.loadtxt(out / "item_factors_0.txt", delimiter=None, dtype=str)
    assert len(items) == len(np.unique(np.loadtxt(ML100K / "u1.base", dtype=np.int64)[:, 1]))


def test_mf_asynchronous_on_u2(tmp_path: Path) -> None:
    """Unbounded staleness (ASP) with 2 workers still trains to the quality bar on u2."""
    out = run_mf(tmp_path, "u2", workers=2, staleness=None, rounds=30)
    assert summary(out)["test_rmse"] < 0.922


def test_mf_rejects_bad_parameters() -> None:
    from paracel.algorithms.mf import MF

    with pytest.raises(ValueError, match="rank"):
        MF(train="unused", rank=0)
    with pytest.raises(ValueError, match="decay"):
        MF(train="unused", decay=1.5)


def test_mf_predicts_unseen_users_and_items_from_the_biases(tmp_path: Path) -> None:
    """A test rating of a user or item absent from training gets mu (+ the known side's bias)."""
    from paracel import launch

    base = np.loadtxt(ML100K / "u1.base", dtype=np.int64)[:5000]
    np.savetxt(tmp_path / "train.tsv", base, fmt="%d", delimiter="\t")
    known_user, known_item = int(base[0, 0]), int(base[0, 1])
    (tmp_path / "test.tsv").write_text(f"99999\t99999\t3\t0\n99999\t{known_item}\t4\t0\n{known_user}\t99998\t2\t0\n")
    config = {"algorithm": "paracel.algorithms.mf:MF", "staleness": 0, "output": str(tmp_path / "out"),
              "params": {"train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "test.tsv"), "rounds": 3}}
    out = launch(config, workers=2, servers=1, timeout=120).output_dir
    mu = summary(out)["global_mean"]
    assert mu == pytest.approx(base[:, 2].mean())
    pred = {(int(u), int(i)): p for u, i, _, p in read_predictions(out)}
    items = {int(line.split("\t")[0]): np.array(line.split("\t")[1].split(","), float)
             for line in (out / "item_factors_0.txt").read_text().splitlines()}
    users = {int(line.split("\t")[0]): np.array(line.split("\t")[1].split(","), float)
             for p in out.glob("user_factors_*.txt") for line in p.read_text().splitlines()}
    assert pred[(99999, 99999)] == pytest.approx(mu, abs=1e-6)
    assert pred[(99999, known_item)] == pytest.approx(mu + items[known_item][-1], abs=1e-5)
    assert pred[(known_user, 99998)] == pytest.approx(mu + users[known_user][-1], abs=1e-5)

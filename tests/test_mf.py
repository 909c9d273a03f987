"""Matrix factorization by SGD: the Cython kernels against plain-Python references, and quality on MovieLens."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paracel._ext import mf_kernels

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-100k"


def _random_problem(seed: int, n_users: int = 7, n_items: int = 9, n: int = 40, k: int = 4, implicit: bool = False):
    """Ratings grouped by user as CSR rows (user 6 has none), random user and item rows."""
    rng = np.random.default_rng(seed)
    users = np.sort(rng.integers(0, n_users - 1, n))
    items = rng.integers(0, n_items, n).astype(np.int32)
    ratings = rng.integers(1, 6, n).astype(np.float64)
    indptr = np.searchsorted(users, np.arange(n_users + 1)).astype(np.int64)
    U = rng.normal(0, 0.3, (n_users, k + 1))
    V = rng.normal(0, 0.3, (n_items, 2 * k + 1 if implicit else k + 1))
    return indptr, items, ratings, U, V


def _sgd_reference(indptr, items, ratings, user_order, U, V, mu, lr, reg, reg_bias, lr_y, reg_y):
    """SVD++ by SGD written out per rating (plain biased SGD when V has no y columns)."""
    k = U.shape[1] - 1
    sse = 0.0
    for user in user_order:
        rated = range(indptr[user], indptr[user + 1])
        if not rated:
            continue
        norm = len(rated) ** -0.5
        implicit = norm * sum(V[items[r], k + 1:] for r in rated) if V.shape[1] > k + 1 else np.zeros(k)
        grad = np.zeros(k)
        u = U[user]
        for r in rated:
            v = V[items[r]]
            e = ratings[r] - (mu + u[k] + v[k] + float((u[:k] + implicit) @ v[:k]))
            sse += e * e
            u[k] += lr * (e - reg_bias * u[k])
            v[k] += lr * (e - reg_bias * v[k])
            pu, qi = u[:k].copy(), v[:k].copy()
            grad += e * qi
            u[:k] = pu + lr * (e * qi - reg * pu)
            v[:k] = qi + lr * (e * (pu + implicit) - reg * qi)
        if V.shape[1] > k + 1:
            for r in rated:
                y = V[items[r], k + 1:]
                y += lr_y * (norm * grad - reg_y * y)
    return sse


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_epoch_matches_reference(seed: int, implicit: bool) -> None:
    indptr, items, ratings, U, V = _random_problem(seed, implicit=implicit)
    order = np.random.default_rng(seed + 10).permutation(len(U))
    U_ref, V_ref = U.copy(), V.copy()
    args = (3.1, 0.05, 0.07, 0.02, 0.03, 0.2)
    sse_ref = _sgd_reference(indptr, items, ratings, order, U_ref, V_ref, *args)
    sse = mf_kernels.sgd_epoch(indptr, items, ratings, order, U, V, *args)
    assert sse == pytest.approx(sse_ref, rel=1e-12)
    np.testing.assert_allclose(U, U_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(V, V_ref, rtol=1e-12, atol=1e-14)


def test_sgd_epoch_visits_only_ordered_users() -> None:
    indptr, items, ratings, U, V = _random_problem(3, implicit=True)
    before_U, before_V = U.copy(), V.copy()
    user = int(np.argmax(np.diff(indptr)))
    mf_kernels.sgd_epoch(indptr, items, ratings, np.array([user]), U, V, 3.0, 0.1, 0.0, 0.0, 0.1, 0.0)
    changed_u = np.flatnonzero(np.any(U != before_U, axis=1))
    changed_v = np.flatnonzero(np.any(V != before_V, axis=1))
    assert changed_u.tolist() == [user]
    assert changed_v.tolist() == np.unique(items[indptr[user]:indptr[user + 1]]).tolist()


def test_sgd_epoch_rejects_bad_shapes() -> None:
    indptr, items, ratings, U, V = _random_problem(4)
    order = np.arange(len(U))
    with pytest.raises(ValueError, match="columns"):
        mf_kernels.sgd_epoch(indptr, items, ratings, order, U, V[:, :-1].copy(), 3.0, 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="indptr"):
        mf_kernels.sgd_epoch(indptr[:-1].copy(), items, ratings, order, U, V, 3.0, 0.1, 0.0, 0.0)
    with pytest.raises(IndexError, match="user 7"):
        mf_kernels.sgd_epoch(indptr, items, ratings, np.array([7]), U, V, 3.0, 0.1, 0.0, 0.0)


def test_fold_implicit_predicts_like_svdpp() -> None:
    """The folded [f, bias] rows predict mu + b_u + b_i + (p_u + |N(u)|^-1/2 sum y_j) . q_i."""
    indptr, items, ratings, U, V = _random_problem(6, implicit=True)
    k = U.shape[1] - 1
    U_out, V_out = mf_kernels.fold_implicit(indptr, items, U, V)
    for user in range(len(U)):
        rated = items[indptr[user]:indptr[user + 1]]
        implicit = V[rated, k + 1:].sum(axis=0) / np.sqrt(max(len(rated), 1))
        for item in range(len(V)):
            expected = 3.0 + U[user, k] + V[item, k] + (U[user, :k] + implicit) @ V[item, :k]
            got = mf_kernels.predict(np.array([user], np.int32), np.array([item], np.int32), U_out, V_out, 3.0)
            assert got[0] == pytest.approx(expected, rel=1e-12)
    plain_V = V[:, :k + 1].copy()
    for got, given in zip(mf_kernels.fold_implicit(indptr, items, U, plain_V), (U, plain_V)):
        np.testing.assert_array_equal(got, given)


def test_predict_clips_and_matches_dot_product() -> None:
    indptr, items, _, U, V = _random_problem(5)
    users = np.repeat(np.arange(len(U), dtype=np.int32), np.diff(indptr))
    k = U.shape[1] - 1
    raw = 3.0 + U[users, k] + V[items, k] + np.einsum("ij,ij->i", U[users, :k], V[items, :k])
    np.testing.assert_allclose(mf_kernels.predict(users, items, U, V, 3.0), raw, rtol=1e-13)
    U[:, k] += 10.0  # push every prediction above the top of the scale
    np.testing.assert_array_equal(mf_kernels.predict(users, items, U, V, 3.0, 1.0, 5.0), 5.0)


@pytest.mark.parametrize("implicit", [False, True])
def test_sgd_epochs_beat_the_bias_only_model_on_u1(implicit: bool) -> None:
    """A few epochs of the kernel alone on real data: train error drops, test RMSE beats the mean."""
    base = np.loadtxt(ML100K / "u1.base", dtype=np.int64)
    test = np.loadtxt(ML100K / "u1.test", dtype=np.int64)
    base = base[np.argsort(base[:, 0], kind="stable")]
    i, r = base[:, 1].astype(np.int32), base[:, 2].astype(np.float64)
    n_users, k = max(base[:, 0].max(), test[:, 0].max()) + 1, 10
    indptr = np.searchsorted(base[:, 0], np.arange(n_users + 1)).astype(np.int64)
    rng = np.random.default_rng(0)
    U = np.zeros((n_users, k + 1))
    V = np.zeros((max(i.max(), test[:, 1].max()) + 1, 2 * k + 1 if implicit else k + 1))
    U[:, :k] = rng.normal(0, 0.1, (U.shape[0], k))
    V[:, :k] = rng.normal(0, 0.1, (V.shape[0], k))
    mu = float(r.mean())
    sses = [mf_kernels.sgd_epoch(indptr, i, r, rng.permutation(n_users), U, V, mu, 0.02, 0.08, 0.05, 0.003, 0.2)
            for _ in range(8)]
    assert all(b < a for a, b in zip(sses, sses[1:]))
    pred = mf_kernels.predict(test[:, 0].astype(np.int32), test[:, 1].astype(np.int32),
                              *mf_kernels.fold_implicit(indptr, i, U, V), mu, 1.0, 5.0)
    test_rmse = float(np.sqrt(np.mean((pred - test[:, 2]) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((mu - test[:, 2]) ** 2)))
    assert test_rmse < 0.96 < mean_rmse


def test_mixing_weights_match_one_serial_epoch() -> None:
    """One worker, or a small step, sums the deltas; workers whose epochs converge are
    averaged; the mixed move, rho / sum(rho_w) * sum(rho_w), is the serial one and never > 1."""
    from paracel.algorithms.mf import mixing_weights

    counts = np.array([[0, 1, 400, 30, 5], [0, 0, 400, 10, 5], [0, 3, 400, 0, 5], [0, 0, 400, 2, 5]], float)
    np.testing.assert_array_equal(mixing_weights(counts[:1], 0.05), 1.0)
    tiny = mixing_weights(counts, 1e-9)
    np.testing.assert_allclose(tiny, 1.0, rtol=1e-6)
    converged = mixing_weights(counts, 0.05)
    assert converged[0] == 1.0 and converged[1] == pytest.approx(1.0, abs=0.05)  # no ratings; few
    assert converged[2] == pytest.approx(1 / 4)  # every worker's epoch converged: the mean
    moved = 1 - 0.95 ** counts
    np.testing.assert_allclose(converged * moved.sum(axis=0), 1 - 0.95 ** counts.sum(axis=0))
    assert np.all(mixing_weights(counts, 2.0) * (counts > 0).sum(axis=0) <= 1.0)


# -- the distributed algorithm on real ranks ------------------------------------------------

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mf.json"


def read_predictions(out: Path) -> np.ndarray:
    """All workers' ``user item rating prediction`` rows, sorted by (user, item)."""
    rows = np.concatenate([np.loadtxt(p, ndmin=2) for p in sorted(out.glob("predictions_*.tsv"))])
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def run_mf(tmp_path: Path, split: str, workers: int, staleness: int | None, *overrides: str) -> Path:
    """The shipped config on ``split`` with 1 server; returns the output folder."""
    from paracel import launch

    data = [f"params.train={ML100K / (split + '.base')}", f"params.test={ML100K / (split + '.test')}"]
    return launch(CONFIG, workers=workers, servers=1, staleness=staleness, overrides=[*data, *overrides],
                  output=tmp_path / f"{split}_w{workers}", timeout=120).output_dir


def summary(out: Path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())}


# Paracel's published u1 test RMSE; Surprise's best on u1 is SVD++ 0.933 (SVD 0.951).
PARACEL_U1 = 0.918
#: MF's bar from issue 5 (test RMSE), for runs whose outcome varies with the ranks' timing:
#: 14 runs at W=4 under ASP ended at 0.9150-0.9195, 9 at W=8 under staleness 2 at 0.9160-0.9174.
MF_BAR = 0.925


def test_mf_two_workers_ssp_on_u1(tmp_path: Path) -> None:
    """The shipped config, 2 workers under staleness 2: the headline (u1 test RMSE <= 0.915),
    predicts every test rating exactly once, and logs a falling train RMSE."""
    out = run_mf(tmp_path, "u1", 2, 2)
    rmse = summary(out)["test_rmse"]
    assert rmse <= 0.915
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
    assert (out / "item_implicit_0.txt").read_text().count("\n") == len(items)


def test_mf_asynchronous_on_u2(tmp_path: Path) -> None:
    """Unbounded staleness (ASP) with 2 workers still trains to the quality bar on u2."""
    out = run_mf(tmp_path, "u2", 2, None)
    assert summary(out)["test_rmse"] < 0.91


@pytest.mark.parametrize(("workers", "staleness", "bar"), [(1, 0, PARACEL_U1), (4, 0, PARACEL_U1), (4, None, MF_BAR),
                                                        (8, 2, MF_BAR)])
def test_mf_holds_its_quality_as_workers_are_added(tmp_path: Path, workers: int, staleness: int | None,
                                                    bar: float) -> None:
    """Workers sharing an item mix their deltas (mixing_weights), so adding workers neither
    diverges (summed deltas did from 4 workers on) nor loses the quality bar: Paracel's u1
    figure under BSP, MF's bar where stale reads make the outcome vary from run to run (it
    straddles Paracel's figure there). W=2 at staleness 2 and unbounded are the tests above;
    8 workers oversubscribe the cores."""
    assert summary(run_mf(tmp_path, "u1", workers, staleness))["test_rmse"] < bar


def test_mf_stops_with_the_round_when_it_diverges(tmp_path: Path) -> None:
    """A learning rate far too large makes the train error non-finite: the job fails naming
    the round, instead of writing a NaN model."""
    from paracel import JobFailed

    with pytest.raises(JobFailed, match=r"MF diverged in round \d+") as failed:
        run_mf(tmp_path, "u1", 2, 0, "params.learning_rate=50")
    assert failed.value.returncode != 0
    assert not (tmp_path / "u1_w2" / "item_factors_0.txt").exists()


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

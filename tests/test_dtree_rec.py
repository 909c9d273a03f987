"""Cold-start decision tree on MovieLens 100K: held-out users vs the global-mean baseline."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp

from paracel._ext.mf_kernels import solve_rows
from paracel.algorithms.dtree_rec import DISLIKE, LIKE, UNKNOWN, best_split, features, grow_tree, level_stats
from test_similarity import load_ratings

RANK, LAM, DEPTH, MIN_CHILD = 10, 0.1, 3, 5


@pytest.fixture(scope="module")
def setup():
    """Biased ALS factors from the training users (user id % 5 != 0) of u.data."""
    ratings = load_ratings("u.data")
    users = np.arange(ratings.shape[0])
    train, held = users[users % 5 != 0], users[users % 5 == 0]
    coo = ratings[train].tocoo()
    rows, cols, vals = train[coo.row].astype(np.int32), coo.col.astype(np.int32), coo.data
    mu = vals.mean()
    v = np.hstack([np.random.default_rng(0).normal(0, 0.1, (ratings.shape[1], RANK)),
                   np.zeros((ratings.shape[1], 1))])
    for _ in range(10):
        u = solve_rows(rows, cols, vals, v, ratings.shape[0], mu, LAM)
        v = solve_rows(cols, rows, vals, u, ratings.shape[1], mu, LAM)
    item_vectors = np.hstack([v[:, :-1], np.ones((ratings.shape[1], 1))])  # y_j = [f_j, 1]
    return ratings, train, held, u[train], item_vectors, mu + v[:, -1], mu


def test_tree_beats_global_mean_for_new_users(setup):
    ratings, train, held, x, item_vectors, offsets, mu = setup
    tree = grow_tree(x, ratings[train], DEPTH, min_child=MIN_CHILD)
    assert tree.item[0] >= 0 and len(tree.item) > 1 + 3
    node, asked = tree.route(ratings[held], 4.0)
    coo = ratings[held].tocoo()
    unseen = np.asarray(asked[coo.row, coo.col]).ravel() == 0  # answers are not scored
    rows, cols, vals = coo.row[unseen], coo.col[unseen], coo.data[unseen]
    rmse = np.sqrt(np.mean((tree.predict(node[rows], cols, item_vectors, offsets) - vals) ** 2))
    global_mean = np.sqrt(np.mean((mu - vals) ** 2))
    item_mean = np.sqrt(np.mean((offsets[cols] - vals) ** 2))
    print(f"held-out RMSE: tree {rmse:.4f}, global mean {global_mean:.4f}, item baseline {item_mean:.4f}"
          f" ({len(held)} users, {len(vals)} ratings, {int((tree.item >= 0).sum())} questions in tree)")
    assert rmse < global_mean - 0.05
    assert rmse < item_mean  # the answers add something beyond the item biases


def test_split_matches_brute_force_scatter(setup):
    ratings, train, _, x, *_ = setup
    r = ratings[train].toarray()
    like, dislike = sp.csr_matrix((r >= 4) * 1.0), sp.csr_matrix(((r > 0) & (r < 4)) * 1.0)
    stats = level_stats(like, dislike, features(x), np.zeros(len(x), np.int64), [0])[0]
    item, child = best_split(stats, set(), MIN_CHILD)
    cost = np.full(r.shape[1], np.inf)
    for j in range(r.shape[1]):
        groups = [r[:, j] >= 4, (r[:, j] > 0) & (r[:, j] < 4), r[:, j] == 0]
        if groups[LIKE].sum() >= MIN_CHILD and groups[DISLIKE].sum() >= MIN_CHILD:
            cost[j] = sum(((x[g] - x[g].mean(axis=0)) ** 2).sum() for g in groups if g.any())
    assert item == int(np.argmin(cost))
    assert child[UNKNOWN, 0] == (r[:, item] == 0).sum()
    np.testing.assert_allclose(child[LIKE, 1:-1], x[r[:, item] >= 4].sum(axis=0))


def test_workers_grow_the_same_tree(setup):
    """Two workers holding halves of the users, statistics summed between them, agree with
    one process holding all users."""
    ratings, train, _, x, *_ = setup
    whole = grow_tree(x, ratings[train], DEPTH, min_child=MIN_CHILD)
    barrier, slots, trees = threading.Barrier(2), [None, None], [None, None]

    def reduce_for(w):
        def reduce(a):
            slots[w] = a
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total
        return reduce

    def work(w):
        trees[w] = grow_tree(x[w::2], ratings[train][w::2], DEPTH, min_child=MIN_CHILD, reduce=reduce_for(w))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    for t in trees:
        assert np.array_equal(t.item, whole.item) and np.array_equal(t.children, whole.children)
        assert np.array_equal(t.size, whole.size)
        np.testing.assert_allclose(t.profile, whole.profile, atol=1e-12)


def test_distributed_job_grows_the_single_process_tree(tmp_path):
    """DTreeRec on real ranks (statistics summed through the server) equals the core's tree."""
    import json

    from paracel.algorithms.dtree_rec import fit_factors
    from paracel.launch import launch
    from test_similarity import ML100K

    config = {"algorithm": "paracel.algorithms.dtree_rec:DTreeRec", "staleness": 0, "output": str(tmp_path),
              "params": {"input": str(ML100K / "u.data"), "depth": DEPTH, "min_child": MIN_CHILD}}
    out = launch(config, workers=2, servers=1, timeout=120).output_dir
    d = np.loadtxt(ML100K / "u.data", dtype=np.int64, usecols=(0, 1, 2))
    raw = sp.csr_matrix((d[:, 2].astype(np.float64), (d[:, 0], d[:, 1])), shape=(944, 1683))
    train = np.arange(1, 944)[np.arange(1, 944) % 5 != 0]
    u_rows, _, _ = fit_factors(raw, train, RANK, LAM, 10, 0)
    ref = grow_tree(u_rows[train], raw[train], DEPTH, min_child=MIN_CHILD)
    got = json.loads((out / "tree.json").read_text())
    assert got["item"] == ref.item.tolist() and got["children"] == ref.children.tolist()
    assert got["size"] == ref.size.tolist()
    metrics = json.loads((out / "metrics_0.jsonl").read_text().splitlines()[-1])
    print("distributed held-out RMSE:", {k: round(v, 4) for k, v in metrics.items() if "rmse" in k})
    assert metrics["tree_rmse"] < metrics["global_mean_rmse"] - 0.05
    assert metrics["tree_rmse"] < metrics["item_baseline_rmse"]

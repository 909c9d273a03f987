"""Adjusted top-k recommendation on MovieLens 100K (u1 split) against brute-force numpy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from paracel.algorithms.ktop import adjust_ktop, precision_at, prune, recommend
from paracel._ext.rec_kernels import Neighbors, sparse_topk
from test_similarity import assert_ranking, brute_sparse, brute_topk, load_ratings

K, LOW, N = 30, 5, 10


@pytest.fixture(scope="module")
def split() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    return load_ratings("u1.base"), load_ratings("u1.test")


def brute_adjust(dense: np.ndarray, lists: dict[int, tuple[np.ndarray, np.ndarray]], low: int,
                 rel_tol: float = 1e-9) -> np.ndarray:
    best = np.zeros(dense.shape[1], dtype=np.int64)
    for j, (nbrs, sims) in lists.items():
        raters = np.flatnonzero(dense[:, j])
        if len(nbrs) < low or len(raters) == 0:
            continue
        m = dense[np.ix_(raters, nbrs)]
        num = np.cumsum(m * sims, axis=1)
        den = np.cumsum((m != 0) * sims, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pred = np.where(den != 0, num / den, dense[raters, j].mean())
        res = ((dense[raters, j][:, None] - pred) ** 2).sum(axis=0)[low - 1:]
        best[j] = low + np.flatnonzero(res <= res.min() + rel_tol * (1 + res.min()))[0]
    return best


def test_adjusted_recommendations_equal_brute_force(split):
    base, test = split
    dense = base.toarray()
    full = brute_sparse(base, "cosine", -np.inf, 1)
    lists = {j: brute_topk(full[j], K) for j in range(dense.shape[1])}
    ref_k = brute_adjust(dense, lists, LOW)
    sim_ref = np.zeros_like(full)
    for j, (nbrs, sims) in lists.items():
        sim_ref[j, nbrs[:ref_k[j]]] = sims[:ref_k[j]]
    scores = dense @ sim_ref
    scores[(dense != 0) | (scores == 0)] = np.nan  # rated items and items no rated item points to

    users = np.arange(base.shape[0])
    # two "workers": items split for the adjustment, users split for the recommendation
    nb = [sparse_topk(np.arange(w, 1682, 2), base, K) for w in range(2)]
    got_k = [adjust_ktop(part, base, low_limit=LOW)[0] for part in nb]
    for part, ks in zip(nb, got_k):
        assert np.array_equal(ks, ref_k[part.item_ids])
    sim = sum(prune(part, ks).to_csr(1682) for part, ks in zip(nb, got_k))
    recs = [recommend(users[w::2], base[w::2], sim, N) for w in range(2)]
    swaps = 0
    for part in recs:
        for r, u in enumerate(part.item_ids):
            ids, vals = part.row(r)
            swaps += assert_ranking(ids, vals, scores[u], N, atol=1e-9)
    assert swaps <= 20, swaps

    # quality on u1.test, against the popularity ranking measured in the same run
    prec, n_users = precision_at(Neighbors.concat(recs), test, N)
    assert n_users == 459  # users of u1.test
    popularity = np.tile((dense != 0).sum(axis=0).astype(np.float64), (dense.shape[0], 1))
    popularity[dense != 0] = np.nan
    pop_hits = [len(np.intersect1d(brute_topk(popularity[u], N)[0], test[u].indices))
                for u in users if test[u].nnz]
    pop_prec = np.mean(pop_hits) / N
    print(f"precision@{N} on u1.test: adjusted item-CF {prec:.4f}, popularity {pop_prec:.4f}")
    assert prec > pop_prec + 0.05


def test_low_limit_and_prune(split):
    base, _ = split
    nb = sparse_topk(np.arange(1682), base, 8)
    best_k, residual = adjust_ktop(nb, base, low_limit=3)
    sizes = np.diff(nb.indptr)
    assert np.all(best_k[sizes < 3] == 0) and np.all(np.isnan(residual[sizes < 3]))
    assert np.all((best_k[sizes >= 3] >= 3) & (best_k[sizes >= 3] <= sizes[sizes >= 3]))
    cut = prune(nb, best_k)
    assert np.array_equal(np.diff(cut.indptr), best_k)
    for r in range(0, 1682, 97):
        assert np.array_equal(cut.row(r)[0], nb.row(r)[0][:best_k[r]])
    with pytest.raises(ValueError):
        adjust_ktop(nb, base, low_limit=0)


def test_distributed_job_matches_core(split, tmp_path):
    """The KTop paralg on real ranks reproduces the single-process pipeline and its precision."""
    import json

    from paracel.launch import launch
    from test_similarity import ML100K, read_lists

    base, test = split
    config = {"algorithm": "paracel.algorithms.ktop:KTop", "staleness": 0, "output": str(tmp_path),
              "params": {"input": str(ML100K / "u1.base"), "test": str(ML100K / "u1.test"),
                         "topk": K, "low_limit": LOW, "n": N}}
    out = launch(config, workers=2, servers=1, timeout=120).output_dir
    nb = sparse_topk(np.arange(1682), base, K)
    best_k, _ = adjust_ktop(nb, base, low_limit=LOW)
    users = np.flatnonzero(base.getnnz(axis=1))
    ref = recommend(users, base[users], prune(nb, best_k).to_csr(1682), N)
    got = read_lists(sorted(out.glob("recommendations_*.txt")))
    assert sorted(got) == (users + 1).tolist()
    for r, u in enumerate(ref.item_ids):
        ids, scores = ref.row(r)
        assert got[u + 1][0] == (ids + 1).tolist()
        np.testing.assert_allclose(got[u + 1][1], scores, rtol=1e-12)
    logged = json.loads((out / "metrics_0.jsonl").read_text().splitlines()[-1])
    assert logged["precision"] == pytest.approx(precision_at(ref, test, N)[0], abs=1e-12)

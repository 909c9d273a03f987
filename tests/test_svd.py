"""Distributed-style truncated SVD against scipy.sparse.linalg.svds on MovieLens 100K."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from paracel.algorithms.svd import gram_of_block, subspace_svd

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-100k"


@pytest.fixture(scope="module")
def ratings() -> sp.csr_matrix:
    d = np.loadtxt(ML100K / "u.data", dtype=np.int64, usecols=(0, 1, 2))
    return sp.csr_matrix((d[:, 2].astype(np.float64), (d[:, 0] - 1, d[:, 1] - 1)), shape=(943, 1682))


def test_top20_matches_svds(ratings):
    k = 20
    u_ref, s_ref, vt_ref = sla.svds(ratings, k=k, random_state=0)
    order = np.argsort(s_ref)[::-1]
    s_ref, v_ref = s_ref[order], vt_ref[order].T
    # three workers with unequal row blocks; their Gram products are summed, as allreduce does
    blocks = [ratings[:300], ratings[300:700], ratings[700:]]
    grams = [gram_of_block(b) for b in blocks]
    res = subspace_svd(lambda v: sum(g(v) for g in grams), ratings.shape[1], k, seed=3)
    rel = np.abs(res.values - s_ref) / s_ref
    assert rel.max() < 1e-6, rel
    assert np.all(np.diff(res.values) <= 0)
    # right vectors agree with svds up to sign; left vectors come out orthonormal and A V = U S
    np.testing.assert_allclose(np.abs(np.sum(res.right * v_ref, axis=0)), 1.0, atol=1e-6)
    left = np.vstack([res.left_block(b) for b in blocks])
    np.testing.assert_allclose(left.T @ left, np.eye(k), atol=1e-9)
    np.testing.assert_allclose(ratings @ res.right, left * res.values, atol=1e-8)


def test_same_seed_is_deterministic_and_blocks_do_not_matter(ratings):
    whole = subspace_svd(gram_of_block(ratings), ratings.shape[1], 5, seed=1)
    again = subspace_svd(gram_of_block(ratings), ratings.shape[1], 5, seed=1)
    assert np.array_equal(whole.values, again.values) and np.array_equal(whole.right, again.right)
    halves = [gram_of_block(ratings[::2]), gram_of_block(ratings[1::2])]
    split = subspace_svd(lambda v: halves[0](v) + halves[1](v), ratings.shape[1], 5, seed=1)
    np.testing.assert_allclose(split.values, whole.values, rtol=1e-10)


def test_nonconvergence_is_an_error(ratings):
    with pytest.raises(RuntimeError, match="did not reach"):
        subspace_svd(gram_of_block(ratings), ratings.shape[1], 20, oversample=0, max_iter=3)
    with pytest.raises(ValueError, match="k must be"):
        subspace_svd(gram_of_block(ratings), ratings.shape[1], 0)


def test_distributed_job_matches_svds(ratings, tmp_path):
    """The SVD paralg on real ranks (2 workers, 1 server): top-20 values vs svds."""
    from paracel.launch import launch

    config = {"algorithm": "paracel.algorithms.svd:SVD", "staleness": 0, "output": str(tmp_path),
              "params": {"input": str(ML100K / "u.data"), "k": 20}}
    out = launch(config, workers=2, servers=1, timeout=120).output_dir
    values = np.loadtxt(out / "singular_values.txt")
    ref = np.sort(sla.svds(ratings, k=20, return_singular_vectors=False))[::-1]
    rel = np.abs(values - ref) / ref
    print(f"distributed SVD: max relative error of the top-20 singular values {rel.max():.2e}")
    assert rel.max() < 1e-6
    right = np.load(out / "right_vectors.npy")[1:]  # row = raw item id; id 0 is unused
    for w in range(2):
        ids, left = np.load(out / f"left_ids_{w}.npy"), np.load(out / f"left_vectors_{w}.npy")
        np.testing.assert_allclose(ratings[ids - 1] @ right, left * values, atol=1e-8)

"""Item similarity top-k on MovieLens 100K against brute-force numpy (ties broken by id)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from paracel._ext.rec_kernels import Neighbors, dense_topk, sparse_topk

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-100k"


def load_ratings(name: str = "u.data", shape: tuple[int, int] = (943, 1682)) -> sp.csr_matrix:
    """A MovieLens file as a users x items CSR matrix with 0-based ids."""
    d = np.loadtxt(ML100K / name, dtype=np.int64, usecols=(0, 1, 2))
    return sp.csr_matrix((d[:, 2].astype(np.float64), (d[:, 0] - 1, d[:, 1] - 1)), shape=shape)


def brute_topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` finite entries of one row of a full matrix: value descending, id ascending."""
    ok = np.flatnonzero(np.isfinite(values))
    order = np.lexsort((ok, -values[ok]))[:k]
    return ok[order], values[ok[order]]


def assert_ranking(got_ids: np.ndarray, got_vals: np.ndarray, full_row: np.ndarray, k: int,
                   atol: float) -> int:
    """Check a returned top-k list against the brute-force row; returns the tie swaps seen.

    Values computed in another summation order may differ in the last bits, so two items whose
    reference values lie within ``atol`` may swap; anything else must match exactly.
    """
    ref_ids, ref_vals = brute_topk(full_row, k)
    assert len(got_ids) == len(ref_ids)
    assert len(set(got_ids.tolist())) == len(got_ids)
    np.testing.assert_allclose(got_vals, full_row[got_ids], rtol=0, atol=atol)
    np.testing.assert_allclose(got_vals, ref_vals, rtol=0, atol=atol)
    swapped = got_ids != ref_ids
    assert np.all(np.abs(full_row[got_ids[swapped]] - ref_vals[swapped]) <= atol)
    return int(swapped.sum())


@pytest.fixture(scope="module")
def ratings() -> sp.csr_matrix:
    return load_ratings()


def brute_sparse(r: sp.csr_matrix, measure: str, min_sim: float, min_cooc: int) -> np.ndarray:
    dense = r.toarray()
    b = (dense != 0).astype(np.float64)
    dots, cooc = dense.T @ dense, b.T @ b
    if measure == "cosine":
        norms = np.sqrt(np.diag(dots))
        with np.errstate(invalid="ignore", divide="ignore"):
            sims = dots / np.outer(norms, norms)
    else:
        support = np.diag(cooc)
        with np.errstate(invalid="ignore", divide="ignore"):
            sims = cooc / (support[:, None] + support[None, :] - cooc)
    sims[(cooc < min_cooc) | (cooc == 0) | ~(sims >= min_sim)] = np.nan
    np.fill_diagonal(sims, np.nan)
    return sims


@pytest.mark.parametrize("measure,min_sim,min_cooc", [
    ("cosine", -np.inf, 1), ("cosine", 0.3, 5), ("jaccard", -np.inf, 1), ("jaccard", 0.1, 3)])
def test_sparse_topk_equals_brute_force(ratings, measure, min_sim, min_cooc):
    k = 20
    full = brute_sparse(ratings, measure, min_sim, min_cooc)
    items = np.arange(ratings.shape[1])
    # two "workers" owning interleaved items, processed in small blocks, then joined
    parts = [sparse_topk(items[w::2], ratings, k, measure, min_sim, min_cooc, block=300) for w in range(2)]
    got = Neighbors.concat(parts)
    assert sorted(got.item_ids.tolist()) == items.tolist()
    for r, item in enumerate(got.item_ids):
        ids, sims = got.row(r)
        ref_ids, ref_sims = brute_topk(full[item], k)
        # integer dot products are exact, so the lists match bit for bit, ties included
        assert np.array_equal(ids, ref_ids), item
        assert np.array_equal(sims, ref_sims), item


def test_sparse_thresholds_prune(ratings):
    loose = sparse_topk(np.arange(1682), ratings, 20)
    strict = sparse_topk(np.arange(1682), ratings, 20, min_sim=0.3, min_cooc=5)
    assert len(strict.ids) < len(loose.ids)
    assert strict.sims.min() >= 0.3
    rows = np.repeat(strict.item_ids, np.diff(strict.indptr))
    b = (ratings != 0).astype(np.float64).tocsc()
    cooc = np.asarray(b[:, rows].multiply(b[:, strict.ids]).sum(axis=0)).ravel()
    assert cooc.min() >= 5
    assert not np.any(rows == strict.ids)


def test_dense_topk_equals_brute_force(ratings):
    k = 20
    _, s, vt = sla.svds(ratings, k=20, random_state=0)
    factors = vt.T * np.sqrt(s)
    factors[7] = 0.0  # an item without a vector has no neighbours and is nobody's neighbour
    with np.errstate(invalid="ignore"):
        unit = factors / np.linalg.norm(factors, axis=1)[:, None]
        full = unit @ unit.T
    np.fill_diagonal(full, np.nan)
    got = dense_topk(np.arange(1682), factors, k, block=400)
    swaps = 0
    for r, item in enumerate(got.item_ids):
        ids, sims = got.row(r)
        if item == 7:
            assert len(ids) == 0
            continue
        assert 7 not in ids
        swaps += assert_ranking(ids, sims, full[item], k, atol=1e-12)
    assert swaps <= 10, swaps  # only genuine float ties may swap
    thresholded = dense_topk(np.arange(1682), factors, k, min_sim=0.9)
    assert thresholded.sims.min() >= 0.9 and len(thresholded.ids) < len(got.ids)


def test_measure_validation(ratings):
    with pytest.raises(ValueError, match="measure"):
        sparse_topk(np.arange(3), ratings, 5, measure="pearson")
    with pytest.raises(ValueError, match="min_cooc"):
        sparse_topk(np.arange(3), ratings, 5, min_cooc=0)


def read_lists(paths) -> dict[int, tuple[list[int], list[float]]]:
    """Parse ``item<TAB>nbr:sim ...`` files written by the jobs."""
    out = {}
    for path in paths:
        for line in path.read_text().splitlines():
            item, _, rest = line.partition("\t")
            pairs = [p.split(":") for p in rest.split()]
            out[int(item)] = ([int(a) for a, _ in pairs], [float(b) for _, b in pairs])
    return out


def test_distributed_job_equals_brute_force(ratings, tmp_path):
    """The Similarity paralg on real ranks (2 workers, 1 server), Jaccard with thresholds."""
    from paracel.launch import launch

    config = {"algorithm": "paracel.algorithms.similarity:Similarity", "staleness": 0, "output": str(tmp_path),
              "params": {"input": str(ML100K / "u.data"), "measure": "jaccard", "topk": 20,
                         "min_sim": 0.05, "min_cooc": 2}}
    out = launch(config, workers=2, servers=1, timeout=120).output_dir
    lists = read_lists(sorted(out.glob("neighbors_*.txt")))
    assert sorted(lists) == list(range(1, 1683))  # raw MovieLens ids
    full = brute_sparse(ratings, "jaccard", 0.05, 2)
    for item, (ids, sims) in lists.items():
        ref_ids, ref_sims = brute_topk(full[item - 1], 20)
        assert ids == (ref_ids + 1).tolist(), item
        assert sims == ref_sims.tolist(), item

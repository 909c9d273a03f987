"""ALS: the normal-equation kernel against numpy, and quality on MovieLens."""
from __future__ import annotations

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

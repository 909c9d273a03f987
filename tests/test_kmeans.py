"""k-means on real data with real ranks: from the same initial centroids, the final inertia equals
scikit-learn's KMeans (Lloyd) within 0.1%, at any worker count and staleness; an empty cluster
is re-seeded, never a division by zero."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKMeans
from sklearn.datasets import load_digits

from paracel import launch
from paracel.algorithms.kmeans import cluster_sums, nearest


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 64 features) as fvec."""
    x = load_digits().data.astype(np.float64)
    path = tmp_path_factory.mktemp("digits") / "digits.fvec"
    path.write_text("".join(f"{i} " + " ".join(f"{v:g}" for v in row) + "\n" for i, row in enumerate(x)))
    return path, x


def run(tmp_path: Path, data: Path, k: int, workers: int, staleness: int | None = 0) -> Path:
    config = {"algorithm": "paracel.algorithms.kmeans:KMeans", "staleness": staleness, "output": str(tmp_path),
              "params": {"input": str(data), "k": k, "seed": 3}}
    launch(config, workers=workers, servers=1, timeout=120)
    return tmp_path


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(nearest(x, centroids)[1].sum())


@pytest.mark.parametrize("workers, staleness", [(1, 0), (2, 0), (4, 2), (3, None)])
def test_inertia_equals_sklearn_from_the_same_start(tmp_path, digits, workers, staleness):
    data, x = digits
    out = run(tmp_path, data, k=10, workers=workers, staleness=staleness)
    start, final = np.load(out / "initial_centroids.npy"), np.load(out / "centroids.npy")
    reference = SKMeans(n_clusters=10, init=start, n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(x)
    assert inertia(x, final) == pytest.approx(reference.inertia_, rel=1e-3)
    labels = {}
    for part in out.glob("labels_*.txt"):
        labels.update(dict(map(int, line.split("\t")) for line in part.read_text().splitlines()))
    assert sorted(labels) == list(range(len(x)))  # every point labelled once
    assert np.array_equal(np.array([labels[i] for i in range(len(x))]), nearest(x, final)[0])


@pytest.mark.parametrize("workers", [1, 3])
def test_kmeans_pp_starts_from_distinct_data_points(tmp_path, digits, workers):
    data, x = digits
    start = np.load(run(tmp_path, data, k=8, workers=workers) / "initial_centroids.npy")
    rows = {tuple(row) for row in x}
    assert len({tuple(row) for row in start}) == 8 and all(tuple(row) in rows for row in start)


def test_more_clusters_than_distinct_points_reseeds_empty_clusters(tmp_path):
    data = tmp_path / "few.fvec"
    data.write_text("".join(f"{i} {i % 3} {i % 3}\n" for i in range(30)))  # 3 distinct points
    out = run(tmp_path / "out", data, k=5, workers=2)
    final = np.load(out / "centroids.npy")
    assert np.isfinite(final).all() and {tuple(r) for r in final} <= {(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)}


def test_cluster_sums_and_nearest():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    label, d2 = nearest(points, np.array([[0.0, 0.0], [10.0, 9.0]]))
    assert label.tolist() == [0, 0, 1] and d2.tolist() == [0.0, 1.0, 1.0]
    assert cluster_sums(points, label, 3).tolist() == [[1.0, 0.0, 2.0], [10.0, 10.0, 1.0], [0.0, 0.0, 0.0]]

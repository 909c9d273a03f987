"""Graph and text algorithms beside their single-process baselines, measured in the same run.

    python benchmarks/graph_text.py [--repeats 3] [--only pagerank kmeans wordcount lda]

PageRank on soc-Slashdot0902 (../shared/data): seconds per round and the job's wall time
with 1 and 2 workers (2 servers), beside a scipy.sparse power iteration on the same graph
(its per-round time, and its total including reading the file with numpy).

k-means on a9a made dense (32,561 x 123, k=10): the job's wall time and final inertia with 1
and 2 workers, beside scikit-learn's KMeans (Lloyd) started from the same centroids. Then
Paracel's own demo case, which its tool/datagen.py generates afresh (scikit-learn's make_blobs:
1,000 points x 20 features around 50 centres; here with a fixed seed), k=50, 100 rounds, 2
workers and 2 servers: the job's wall time beside the start-up floor.

Word count on every file of 20 Newsgroups (unpacked to a temporary folder): MB/s of the whole
job with 1 and 2 workers, and with 2 workers on the corpus concatenated into one file
(Paracel's case), beside ``collections.Counter`` over the same tokens in one process and the
wall time of a trivial job (start-up floor).

LDA on KOS (configs/lda.json): tokens sampled per second, the job's wall time and the held-out
perplexity (document completion, algorithms/README.md) at K=20 with 1 and 2 workers and at K=50
with 2, beside scikit-learn's LatentDirichletAllocation (batch variational, 50 iterations, K=20)
fitted on the same training documents and scored by the same protocol.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SLASHDOT = ROOT.parent / "shared" / "data" / "snap-soc-slashdot0902" / "soc-Slashdot0902.txt"
A9A = ROOT.parent / "shared" / "data" / "a9a" / "a9a"
NEWSGROUPS = ROOT.parent / "shared" / "data" / "20newsgroups" / "20news-bydate.tar.gz"
KOS = ROOT.parent / "shared" / "data" / "uci-bow-kos" / "docword.kos.txt"

from paracel import launch  # noqa: E402
from tests.graphs import scipy_pagerank  # noqa: E402


def timed_job(config: str, workers: int, servers: int, overrides: list[str],
              collect: Callable[[Path], Any] = lambda out: None) -> tuple[float, list[dict], Any]:
    """(job wall time, worker 0's metrics rows, ``collect(output folder)``) of one run."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        launch(ROOT / "configs" / config, workers=workers, servers=servers, output=out, timeout=600,
               overrides=overrides)
        wall = time.perf_counter() - start
        steps = [json.loads(line) for line in open(Path(out) / "metrics_0.jsonl")]
        return wall, steps, collect(Path(out))


def paracel_pagerank(workers: int) -> tuple[float, float, int]:
    """(seconds per round, job wall time, rounds) of configs/pagerank.json on Slashdot."""
    wall, steps, _ = timed_job("pagerank.json", workers, 2, [f"params.input={SLASHDOT}"])
    return steps[-1]["seconds"] / len(steps), wall, len(steps)


def paracel_kmeans(workers: int) -> tuple[float, float, int, np.ndarray]:
    """(job wall time, final inertia, rounds, initial centroids) of configs/kmeans.json on a9a."""
    wall, steps, initial = timed_job("kmeans.json", workers, 1, [f"params.input={A9A}"],
                                     lambda out: np.load(out / "initial_centroids.npy"))
    return wall, steps[-1]["inertia"], len(steps), initial


def kmeans_table(repeats: int) -> None:
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_svmlight_file

    print("\nk-means, a9a dense (32,561 x 123), k=10, until no point moves")
    print(f"{'system':<32}{'wall (s)':>10}{'rounds':>8}{'inertia':>14}")
    initial = None
    for workers in (1, 2):
        runs = [paracel_kmeans(workers) for _ in range(repeats)]
        wall = float(np.median([r[0] for r in runs]))
        initial = runs[0][3]
        print(f"{f'paracel w={workers}':<32}{wall:>10.2f}{runs[0][2]:>8}{runs[0][1]:>14.1f}", flush=True)
    x = load_svmlight_file(str(A9A), n_features=123)[0].toarray()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = KMeans(n_clusters=10, init=initial, n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(x)
        times.append(time.perf_counter() - start)
    print(f"{'sklearn KMeans, same start':<32}{np.median(times):>10.2f}{model.n_iter_:>8}{model.inertia_:>14.1f}"
          "\n(sklearn's time excludes loading; paracel's is the whole job)")
    kmeans_demo_row(repeats)


def kmeans_demo_row(repeats: int) -> None:
    """k-means on data made as Paracel's tool/datagen.py makes its demo (``-n 1000 -k 20
    --ncenters 50``, in its ``id<TAB>x,x,...`` layout), k=50 for 100 rounds, 2 workers, 2 servers."""
    from sklearn.datasets import make_blobs

    points, _ = make_blobs(n_samples=1000, centers=50, n_features=20, random_state=0)
    with tempfile.TemporaryDirectory() as folder:
        demo = Path(folder) / "kmeans_demo.csv"
        demo.write_text("".join(f"{i}\t{','.join(map(repr, row))}\n" for i, row in enumerate(points.tolist())))
        runs = [timed_job("kmeans.json", 2, 2, [f"params.input={demo}", "params.fmt=fvec", "params.k=50",
                                                "params.rounds=100"]) for _ in range(repeats)]
    wall, steps = float(np.median([r[0] for r in runs])), runs[0][1]
    print(f"\nk-means on Paracel's demo case (make_blobs 1,000 x 20, 50 centres), k=50, 2 workers, 2 servers"
          f"\n{'paracel (whole job)':<32}{wall:>10.2f}{len(steps):>8}{steps[-1]['inertia']:>14.1f}"
          f"\n{'trivial job w=2 (start-up floor)':<32}{startup_seconds(repeats):>10.2f}"
          "\n(Paracel C++, 100 rounds: 0.57 s)")


def startup_seconds(repeats: int) -> float:
    """Median wall time of a trivial job (word count of one short line, 2 workers, 2 servers):
    MPI and interpreter start-up, imports and shutdown, the floor under every job's time."""
    with tempfile.TemporaryDirectory() as folder:
        tiny = Path(folder) / "tiny.txt"
        tiny.write_text("hello world\n")
        return float(np.median([timed_job("wordcount.json", 2, 2, [f"params.input={tiny}"])[0]
                                for _ in range(repeats)]))


def wordcount_table(repeats: int) -> None:
    from collections import Counter
    import tarfile

    from paracel.algorithms.wordcount import WORD

    with tempfile.TemporaryDirectory() as corpus:
        with tarfile.open(NEWSGROUPS) as tar:
            tar.extractall(corpus, filter="data")
        files = sorted(p for p in Path(corpus).rglob("*") if p.is_file())
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        print(f"\nword count, 20 Newsgroups ({len(files):,} files, {megabytes:.1f} MB, latin-1)")
        print(f"{'system':<36}{'wall (s)':>10}{'MB/s':>8}")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            counts: Counter = Counter()
            for path in files:
                counts.update(WORD.findall(path.read_bytes().decode("latin-1").lower()))
            times.append(time.perf_counter() - start)
        print(f"{'Counter (1 process)':<36}{np.median(times):>10.2f}{megabytes / np.median(times):>8.1f}", flush=True)
        one_file = Path(corpus) / "all.txt"  # Paracel's case: the corpus concatenated into one file
        with open(one_file, "wb") as out:
            for path in files:
                out.write(path.read_bytes())
        for label, data, workers in [("files", corpus, 1), ("files", corpus, 2), ("one file", one_file, 2)]:
            overrides = [f"params.input={data}", "params.encoding=latin-1"]
            wall = float(np.median([timed_job("wordcount.json", workers, 2, overrides)[0] for _ in range(repeats)]))
            print(f"{f'paracel w={workers}, {label} (whole job)':<36}{wall:>10.2f}{megabytes / wall:>8.1f}", flush=True)
        print(f"{'trivial job w=2 (start-up floor)':<36}{startup_seconds(repeats):>10.2f}{'-':>8}"
              "\n(Paracel C++, one file, 2 workers, 2 servers: 2.66 s)")


def sklearn_lda_perplexity(k: int, holdout_every: int = 10) -> tuple[float, float]:
    """(fit seconds, held-out perplexity) of scikit-learn's LDA under paracel's protocol."""
    import scipy.sparse as sp
    from sklearn.decomposition import LatentDirichletAllocation

    from paracel.algorithms.lda import completion_split

    doc, word, count = np.loadtxt(KOS, skiprows=3, dtype=np.int64).T
    n_docs, n_words = doc.max() + 1, word.max()
    counts = sp.csr_matrix((count, (doc, word - 1)), shape=(n_docs, n_words))
    held = np.arange(n_docs) % holdout_every == 0
    train = counts[(~held) & (np.asarray(counts.sum(axis=1)).ravel() > 0)]
    model = LatentDirichletAllocation(n_components=k, doc_topic_prior=0.1, topic_word_prior=0.01,
                                      max_iter=50, learning_method="batch", random_state=0)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    phi = (model.components_ / model.components_.sum(axis=1, keepdims=True)).T  # words x K
    loglik, tokens = 0.0, 0
    for d in np.flatnonzero(held & (np.asarray(counts.sum(axis=1)).ravel() > 0)).tolist():
        row = counts[d]
        seen, scored = completion_split(d, np.repeat(row.indices + 1, row.data))
        observed = sp.csr_matrix((np.ones(len(seen)), (np.zeros(len(seen), int), seen - 1)), shape=(1, n_words))
        theta = model.transform(observed)[0]
        loglik += float(np.log(phi[scored - 1] @ theta).sum())
        tokens += len(scored)
    return seconds, float(np.exp(-loglik / tokens))


def lda_table(repeats: int) -> None:
    doc, _, count = np.loadtxt(KOS, skiprows=3, dtype=np.int64).T
    train_tokens = int(count[doc % 10 != 0].sum())
    print(f"\nLDA, KOS ({train_tokens:,} training tokens; 1 document in 10 held out), configs/lda.json")
    print(f"{'system':<36}{'tokens/s':>12}{'wall (s)':>10}{'perplexity':>12}")
    for k, workers in [(20, 1), (20, 2), (50, 2)]:
        runs = [timed_job("lda.json", workers, 2, [f"params.input={KOS}", f"params.k={k}"],
                          lambda out: float(dict(line.split("\t") for line in
                                                 (out / "summary.tsv").read_text().splitlines())["heldout_perplexity"]))
                for _ in range(repeats)]
        walls, perplexities = [r[0] for r in runs], [r[2] for r in runs]
        sweeps = [s for s in runs[0][1] if "loglik_per_token" in s]
        rate = train_tokens * len(sweeps) / sweeps[-1]["seconds"]
        print(f"{f'paracel K={k} w={workers} (2 servers)':<36}{rate:>12,.0f}{np.median(walls):>10.2f}"
              f"{np.median(perplexities):>12.1f}   (wall {min(walls):.2f}-{max(walls):.2f}, "
              f"perplexity {min(perplexities):.1f}-{max(perplexities):.1f})", flush=True)
    seconds, perplexity = sklearn_lda_perplexity(20)
    print(f"{'sklearn LDA K=20 (batch VB, 50 it.)':<36}{'-':>12}{seconds:>10.2f}{perplexity:>12.1f}"
          "\n(sklearn's time is its fit; paracel's is the whole job. Paracel C++: K=20 11.3 s to 1770, "
          "K=50 15.4 s to 1660.)")


def pagerank_table(repeats: int) -> None:
    print("PageRank, soc-Slashdot0902 (82,168 vertices, 948,464 edges), damping 0.85, tol 1e-12 (L1)")
    print(f"{'system':<32}{'s/round':>10}{'rounds':>8}{'total (s)':>11}")
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, rounds, per = scipy_pagerank(SLASHDOT, tol=1e-12)
        runs.append((per, time.perf_counter() - start, rounds))
    per, total, rounds = (float(np.median([r[i] for r in runs])) for i in (0, 1, 2))
    print(f"{'scipy.sparse (1 process)':<32}{per:>10.4f}{rounds:>8.0f}{total:>11.2f}", flush=True)
    for workers in (1, 2):
        runs = [paracel_pagerank(workers) for _ in range(repeats)]
        per, total, rounds = (float(np.median([r[i] for r in runs])) for i in range(3))
        print(f"{f'paracel w={workers} (2 servers)':<32}{per:>10.4f}{rounds:>8.0f}{total:>11.2f}", flush=True)
    print(f"\nmedians of {repeats} runs; scipy's total includes np.loadtxt, paracel's is the whole job"
          "\n(MPI start-up, loading, rounds, output); Paracel C++ (2 workers, 2 servers): 29.1 s.")


TABLES: dict[str, Callable[[int], None]] = {"pagerank": pagerank_table, "kmeans": kmeans_table,
                                            "wordcount": wordcount_table, "lda": lda_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; medians are printed")
    parser.add_argument("--only", nargs="+", choices=sorted(TABLES), default=sorted(TABLES),
                        help="the tables to print (default: all)")
    args = parser.parse_args()
    for name in ("pagerank", "kmeans", "wordcount", "lda"):
        if name in args.only:
            TABLES[name](args.repeats)


if __name__ == "__main__":
    main()

"""Worker program for test_loading_mpi: run under mpiexec, each rank saves what it loaded.

    loading_job.py suite OUT DATA    # real data: shards, shuffles, graph, matrix, streaming
    loading_job.py errors OUT DIR    # DIR/bad.txt: the error must reach every rank
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import paracel.loading as L

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()


def save(out: Path, name: str, result) -> None:
    stem = out / f"{name}.{RANK}"
    if isinstance(result, L.Lines):
        Path(f"{stem}.json").write_text(json.dumps(result.lines))
    elif isinstance(result, L.SparseRows):
        X = result.X
        np.savez(stem, data=X.data, indices=X.indices, indptr=X.indptr, y=result.y,
                 shape=np.array(X.shape))
    else:
        np.savez(stem, **result)


def suite(out: Path, data: Path) -> None:
    udata, wiki, a9a = (data / "movielens-100k/u.data", data / "snap-wiki-vote/wiki-Vote.txt",
                        data / "a9a/a9a")
    for name, path, fmt in [("udata_lines", udata, "lines"), ("udata", udata, "ratings"),
                            ("wiki_lines", wiki, "lines"), ("wiki", wiki, "edges"),
                            ("a9a_lines", a9a, "lines"), ("a9a", a9a, "libsvm")]:
        res = L.load(path, comm=COMM, fmt=fmt)
        save(out, name, res if not isinstance(res, L.Table) else res.columns)
    for mode in ("fmap", "smap", "fsmap"):
        save(out, f"udata_{mode}", L.load(udata, comm=COMM, fmt="ratings", shuffle=mode).columns)

    g = L.load_as_graph(wiki, comm=COMM)
    o, i = g.out_adj.tocoo(), g.in_adj.tocoo()
    save(out, "graph", {
        "vertices": g.vertices.ids, "out_src": g.vertices.ids[o.row], "out_dst": g.out_nbrs.ids[o.col],
        "in_src": g.in_nbrs.ids[i.row], "in_dst": g.vertices.ids[i.col],
        "out_degree": g.out_degree, "in_degree": g.in_degree,
        "totals": np.array([g.n_vertices, g.n_edges])})

    m = L.load_as_matrix(udata, comm=COMM, fmt="ratings", col_map="global")
    c = m.matrix.tocoo()
    save(out, "matrix", {"rows": m.rows.ids, "cols": m.cols.ids, "user": m.rows.ids[c.row],
                         "item": m.cols.ids[c.col], "rating": c.data})

    seen = {"blocks": 0, "records": 0, "rating_sum": 0.0}

    def per_block(block: L.Table) -> None:  # uses a collective: allowed by the contract
        seen["blocks"] += 1
        seen["records"] += COMM.allreduce(len(block)) // COMM.Get_size()
        seen["rating_sum"] += float(block["rating"].sum())

    info = L.sequential_loadall(udata, per_block, comm=COMM, fmt="ratings", block_bytes=100_000)
    every = L.loadall(wiki, comm=COMM, fmt="edges")
    seen.update(info_blocks=info.meta["blocks"], info_records=info.meta["records"],
                loadall_edges=len(every))
    (out / f"stream.{RANK}.json").write_text(json.dumps(seen))


def errors(out: Path, folder: Path) -> None:
    outcome = {}
    cases = {"raise": dict(pattern=folder / "bad.txt", fmt="ratings"),
             "graph": dict(pattern=folder / "bad.txt", fmt="edges", graph=True),
             "missing": dict(pattern=folder / "nothing-*.txt", fmt="ratings"),
             "skip": dict(pattern=folder / "bad.txt", fmt="ratings", on_error="skip")}
    for name, kw in cases.items():
        load = L.load_as_graph if kw.pop("graph", False) else L.load
        try:
            res = load(kw.pop("pattern"), comm=COMM, **kw)
            outcome[name] = {"ok": True, "n": len(res), "skipped": res.info.skipped,
                             "skipped_total": res.info.skipped_total}
        except Exception as exc:  # noqa: BLE001 - the test inspects what each rank raised
            outcome[name] = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    (out / f"errors.{RANK}.json").write_text(json.dumps(outcome))


if __name__ == "__main__":
    mode, out, arg = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    {"suite": suite, "errors": errors}[mode](out, arg)

"""Formats and bad input, on one rank in-process (the multi-rank behaviour is in test_loading_mpi)."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import paracel.loading as L

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COMM = MPI.COMM_WORLD
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")


def parse_kv(lines: list[str]) -> dict[str, np.ndarray]:
    """A user parser for ``key=value`` lines (used by name as 'test_loading_formats:parse_kv')."""
    keys, vals = [], []
    for i, line in enumerate(lines):
        k, sep, v = line.partition("=")
        if not sep:
            raise L.LineError(i, "expected key=value")
        keys.append(int(k))
        vals.append(float(v))
    return {"key": np.array(keys, dtype=np.int64), "value": np.array(vals)}


@needs_data
@pytest.mark.parametrize("name,n_features", [("a9a", None), ("a9a.t", 123)])
def test_libsvm_matches_sklearn(name: str, n_features: int | None) -> None:
    from sklearn.datasets import load_svmlight_file
    path = DATA / "a9a" / name
    X_ref, y_ref = load_svmlight_file(str(path), n_features=n_features)
    got = L.load(path, comm=COMM, fmt="libsvm", n_features=n_features)
    assert got.X.shape == X_ref.shape and got.X.nnz == X_ref.nnz
    assert np.array_equal(got.y, y_ref)
    assert np.array_equal(got.X.indptr, X_ref.indptr)
    assert np.array_equal(got.X.indices, X_ref.indices)
    assert np.array_equal(got.X.data, X_ref.data)


@needs_data
def test_ratings_match_loadtxt() -> None:
    path = DATA / "movielens-100k" / "u.data"
    ref = np.loadtxt(path, dtype=np.int64)
    got = L.load(path, comm=COMM, fmt="ratings")
    assert np.array_equal(got["user"], ref[:, 0]) and np.array_equal(got["item"], ref[:, 1])
    assert np.array_equal(got["rating"], ref[:, 2].astype(float))
    assert np.array_equal(got["time"], ref[:, 3])


@needs_data
def test_edges_crlf_comments_and_docword_header() -> None:
    path = DATA / "snap-wiki-vote" / "wiki-Vote.txt"
    ref = np.array([line.split() for line in path.read_text().splitlines()
                    if not line.startswith("#")], dtype=np.int64)
    got = L.load(path, comm=COMM, fmt="edges")
    assert np.array_equal(np.c_[got["src"], got["dst"]], ref)
    assert np.all(got["weight"] == 1.0)
    kos = L.load(DATA / "uci-bow-kos" / "docword.kos.txt", comm=COMM, fmt="docword")
    assert len(kos) == 353_160 and kos["count"].sum() == 467_714
    assert kos["doc"].max() == 3430 and kos["word"].max() <= 6906
    assert kos.info.meta == {"n_docs": 3430, "n_words": 6906, "nnz": 353_160}


def test_float_fields_are_correctly_rounded(tmp_path: Path) -> None:
    rng = random.Random(3)
    nums = ([rng.uniform(-1e6, 1e6) for _ in range(300)] + [rng.random() * 10 ** rng.randint(-300, 300)
            for _ in range(300)] + [0.1, -0.0, 1e-320, 123456789012345678, 2.5e-7])
    texts = [repr(x) if i % 3 else f"{x:.17g}" for i, x in enumerate(nums)]
    p = tmp_path / "f.csv"
    p.write_text("\n".join(f"{i},{t}" for i, t in enumerate(texts)))  # no final LF
    got = L.load(p, comm=COMM, fmt="csv", columns=["id:int", "x:float"])
    assert np.array_equal(got["id"], np.arange(len(texts)))
    assert got["x"].tolist() == [float(t) for t in texts]


def test_layouts_optional_fields_fvec_and_gz(tmp_path: Path) -> None:
    p = tmp_path / "r.tsv.gz"
    p.write_bytes(gzip.compress(b"h1\th2\n1\tfoo\t2.5\n3\tbar\t-1e2\n"))
    got = L.load(p, comm=COMM, fmt="tsv", header=1, columns=["a:int", "_", "b:float"])
    assert list(got.columns) == ["a", "b"] and got["a"].tolist() == [1, 3]
    assert got["b"].tolist() == [2.5, -100.0]
    r = tmp_path / "u.dat"
    r.write_text("1::10::5::978300760\n2::20::3\n")
    ratings = L.load(r, comm=COMM, fmt="ratings")
    assert ratings["time"].tolist() == [978300760, -1] and ratings["item"].tolist() == [10, 20]
    v = tmp_path / "v.txt"
    v.write_text("7 0.5,1,2\n9 3,4,5.25\r\n")
    vec = L.load(v, comm=COMM, fmt="fvec")
    assert vec["id"].tolist() == [7, 9] and vec["values"].tolist() == [[0.5, 1, 2], [3, 4, 5.25]]
    dense = L.load_as_matrix(v, comm=COMM, fmt="fvec")
    assert dense.cols is None and dense.matrix[dense.rows.to_local([9])[0]].tolist() == [3, 4, 5.25]


def test_lines_drop_crlf_endings_even_on_a_last_line_without_lf(tmp_path: Path) -> None:
    p = tmp_path / "crlf.txt"
    p.write_bytes(b"a b\r\n\r\nc\rd\r\n e\r")
    assert L.load(p, comm=COMM).lines == ["a b", "", "c\rd", " e"]


@pytest.mark.parametrize("block_bytes", [7, 1 << 20])
def test_text_is_the_lines_as_decoded_text_in_blocks(tmp_path: Path, block_bytes: int) -> None:
    raw = "café au lait\r\nnaïve\n\nx y\r\nlast line".encode("latin-1")
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "b.txt").write_bytes(b"second file\n")
    got = L.load(tmp_path, comm=COMM, fmt="text", encoding="latin-1", block_bytes=block_bytes)
    lines = L.load(tmp_path, comm=COMM, fmt="lines", encoding="latin-1", block_bytes=block_bytes).lines
    assert got.n_lines == len(got) == len(lines) == 6
    assert "".join(got.texts) == raw.decode("latin-1") + "second file\n"
    assert len(got.texts) > 2 if block_bytes == 7 else len(got.texts) == 2
    assert [ln.removesuffix("\r") for t in got.texts for ln in t.removesuffix("\n").split("\n")] == lines


def test_lines_in_another_encoding(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("café\nnaïve\n".encode("latin-1"))
    assert L.load(p, comm=COMM, fmt="lines", encoding="latin-1").lines == ["café", "naïve"]
    with pytest.raises(L.LoadError, match="invalid UTF-8"):
        L.load(p, comm=COMM, fmt="lines")
    with pytest.raises(LookupError):
        L.load(p, comm=COMM, fmt="lines", encoding="no-such-codec")
    with pytest.raises(ValueError, match="encoding is for fmt='lines'"):
        L.load(p, comm=COMM, fmt="ratings", encoding="latin-1")

def test_user_parser_by_callable_and_by_name(tmp_path: Path) -> None:
    p = tmp_path / "kv.txt"
    p.write_text("1=0.5\n2=1.5\n")
    for parser in (parse_kv, "test_loading_formats:parse_kv"):
        got = L.load(p, comm=COMM, fmt=parser)
        assert got["key"].tolist() == [1, 2] and got["value"].tolist() == [0.5, 1.5]
    records = L.load(p, comm=COMM, fmt=lambda lines: [line.split("=") for line in lines])
    assert records.items == [["1", "0.5"], ["2", "1.5"]]


BAD = [  # (format, options, file bytes, message expected, line number)
    ("ratings", {}, b"1 2 3\n4 5\n", "wrong number of fields", 2),
    ("ratings", {}, b"1 2 3\n1 2 3 4 5\n", "wrong number of fields", 2),
    ("edges", {}, b"# c\n1 2\n3 x\n", "not an integer in field 2", 3),
    ("csv", {"columns": ["a:int", "b:float"]}, b"1,2\n3,4.5.6\n", "not a number in field 2", 2),
    ("csv", {"columns": ["a:int", "b:float"]}, b"1,2\n3,,\n", "empty field", 2),
    ("libsvm", {}, b"1 1:1\n-1 0:1 2:1\n", "feature index must be an integer >= 1", 2),
    ("libsvm", {}, b"1 1:1\n\n-1 3 2:1\n", "item is not idx:val", 3),
    ("libsvm", {"n_features": 2}, b"1 1:1\n-1 3:1\n", "beyond n_features=2", 2),
    ("lines", {}, b"ok\nok\n\xff\xfe bad\nok\n", "invalid UTF-8", 3),
    ("text", {}, b"ok\nok\n\xff\xfe bad\nok\n", "invalid UTF-8", 3),
    ("fvec", {}, b"1 1,2\n2 3\n", "wrong number of fields", 2),
    (parse_kv, {}, b"1=2\nnope\n", "expected key=value", 2),
]


@pytest.mark.parametrize("fmt,options,data,message,line", BAD)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_line_names_file_and_line(tmp_path: Path, fmt, options, data, message, line,
                                      gz: bool) -> None:
    p = tmp_path / ("bad.txt.gz" if gz else "bad.txt")
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(L.LoadError, match=rf"bad\.txt(\.gz)?:{line}: .*{message}"):
        L.load(p, comm=COMM, fmt=fmt, **options)


@pytest.mark.parametrize("fmt,options,data,message,line",
                         [b for b in BAD if "n_features" not in b[1]])
def test_bad_lines_skipped_and_counted(tmp_path: Path, fmt, options, data, message, line) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(data)
    with pytest.warns(UserWarning, match=rf"skipped 1 malformed line.*bad\.txt:{line}"):
        got = L.load(p, comm=COMM, fmt=fmt, on_error="skip", **options)
    assert got.info.skipped == got.info.skipped_total == 1
    assert message in got.info.first_skipped
    good = [ln for i, ln in enumerate(data.split(b"\n")[:-1]) if i + 1 != line
            and ln.strip() and not ln.startswith(b"#")]
    assert len(got) == len(good)


def test_missing_input_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(L.LoadError, match="does not exist"):
        L.load(tmp_path / "missing.txt", comm=COMM)
    with pytest.raises(L.LoadError, match="matched no files"):
        L.load(str(tmp_path / "*.none"), comm=COMM, fmt="ratings")
    (tmp_path / "x.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="unknown format"):
        L.load(tmp_path / "x.txt", comm=COMM, fmt="nonsense")
    with pytest.raises(ValueError, match="needs columns"):
        L.load(tmp_path / "x.txt", comm=COMM, fmt="csv")
    with pytest.raises(ValueError, match="cannot import parser"):
        L.load(tmp_path / "x.txt", comm=COMM, fmt="no_such_mod:fn")

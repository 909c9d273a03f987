"""Byte splitting: every line read by exactly one worker, whatever W and block size (no MPI:
the split is a pure function of rank and size, so all ranks are simulated in one process)."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from paracel.loading.errors import LoadError
from paracel.loading.inputs import describe, resolve
from paracel.loading.split import assign, chunks


def shard_lines(pattern, rank: int, size: int, block: int, header: int = 0) -> list[bytes]:
    files = describe(resolve(pattern), header)
    out = []
    for chunk in chunks(assign(files, rank, size), block):
        data = bytes(chunk.data)
        assert data, "a chunk is never empty"
        body = data[:-1] if data.endswith(b"\n") else data
        out.extend(body.split(b"\n"))
    return out


def expected_lines(paths: list[Path], header: int = 0) -> list[bytes]:
    out = []
    for p in paths:
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        out.extend(lines[header:])
    return out


def random_text(rng: random.Random, n_lines: int, final_newline: bool, crlf: bool) -> bytes:
    lines = [b"x" * rng.choice([0, 1, 2, 5, 40, 300]) + str(i).encode() * rng.randint(0, 1)
             for i in range(n_lines)]
    end = b"\r\n" if crlf else b"\n"
    text = end.join(lines)
    return text + end if final_newline and lines else text


@pytest.fixture
def awkward_files(tmp_path: Path) -> list[Path]:
    rng = random.Random(7)
    specs = [("a.txt", 50, True, False), ("b.txt", 3, False, False), ("c.txt", 0, True, False),
             ("d.txt", 1, False, True), ("e.txt", 80, True, True), ("f.txt", 2, True, False)]
    paths = []
    for name, n, final, crlf in specs:
        p = tmp_path / "in" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(random_text(rng, n, final, crlf))
        paths.append(p)
    g = tmp_path / "in" / "sub" / "g.txt.gz"
    g.parent.mkdir()
    g.write_bytes(gzip.compress(random_text(rng, 60, False, False)))
    paths.append(g)
    return sorted(paths, key=lambda p: str(p))


@pytest.mark.parametrize("block", [1, 13, 1 << 20])
def test_every_line_once_in_order(awkward_files: list[Path], block: int) -> None:
    want = expected_lines(awkward_files)
    folder = awkward_files[0].parent
    for size in range(1, 8):
        got = [line for r in range(size) for line in shard_lines(folder, r, size, block)]
        assert got == want, f"W={size} block={block}"


@pytest.mark.parametrize("gz", [False, True])
def test_boundaries_on_line_starts(tmp_path: Path, gz: bool) -> None:
    # Two-byte lines put a line start at every other byte, so many range ends hit one exactly.
    text = b"".join(b"%d\n" % (i % 10) for i in range(997))
    p = tmp_path / ("short.txt.gz" if gz else "short.txt")
    p.write_bytes(gzip.compress(text) if gz else text)
    for size in range(1, 13):
        got = [line for r in range(size) for line in shard_lines(p, r, size, 64)]
        assert got == text.split(b"\n")[:-1], f"W={size}"


def test_header_lines_skipped_per_file(awkward_files: list[Path]) -> None:
    want = expected_lines(awkward_files, header=2)
    for size in (1, 3, 5):
        got = [line for r in range(size)
               for line in shard_lines(awkward_files[0].parent, r, size, 64, header=2)]
        assert got == want


def test_single_tiny_file_more_workers_than_lines(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(b"1\n22\n333")
    shards = [shard_lines(p, r, 6, 1 << 20) for r in range(6)]
    assert [line for s in shards for line in s] == [b"1", b"22", b"333"]
    assert sum(1 for s in shards if s) <= 3


@pytest.mark.parametrize("gz", [False, True])
def test_balanced_on_a_large_file(tmp_path: Path, gz: bool) -> None:
    rng = random.Random(1)
    text = b"".join(b"%d %d %.6f\n" % (rng.randrange(10**6), rng.randrange(10**4), rng.random())
                    for _ in range(100_000))
    p = tmp_path / ("big.txt.gz" if gz else "big.txt")
    p.write_bytes(gzip.compress(text) if gz else text)
    size = 4
    shares = [sum(len(line) + 1 for line in shard_lines(p, r, size, 1 << 16)) for r in range(size)]
    assert sum(shares) == len(text)
    for share in shares:
        assert abs(share / len(text) - 1 / size) < 0.02 / size, shares


def test_resolve_folder_glob_and_lists(awkward_files: list[Path]) -> None:
    folder = awkward_files[0].parent
    assert resolve(folder) == [str(p) for p in awkward_files]
    assert resolve(str(folder / "*.txt")) == [str(p) for p in awkward_files if p.suffix == ".txt"]
    assert resolve(str(folder / "**" / "*.gz")) == [str(awkward_files[-1])]
    assert resolve([folder / "b.txt", folder / "a.txt", folder / "a.txt"]) == [
        str(folder / "a.txt"), str(folder / "b.txt")]


def test_missing_path_and_empty_glob_name_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="nope.txt.*does not exist"):
        resolve(tmp_path / "nope.txt")
    with pytest.raises(LoadError, match=r"\*.csv.*matched no files"):
        resolve(str(tmp_path / "*.csv"))

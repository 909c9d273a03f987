"""The default job: distributed word count equals a single-process count of the same text."""
from __future__ import annotations

import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from paracel import launch
from paracel._ext.text_kernels import count_default_words
from paracel.algorithms.wordcount import WORD, count_words

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEXT = ROOT / "data" / "kjv-genesis-exodus.txt"


def test_counts_and_topk_match_a_single_process_count(tmp_path):
    expected = count_words(TEXT.read_text(encoding="utf-8").splitlines())
    job = launch(ROOT / "configs" / "wordcount.json", workers=3, servers=2, output=tmp_path,
                 overrides=[f"params.input={TEXT}", "params.topk=15"], timeout=120)
    got = {}
    for line in (tmp_path / "wordcount.txt").read_text(encoding="utf-8").splitlines():
        word, count = line.split("\t")
        got[word] = int(count)
    assert got == dict(expected)
    top = [line.split("\t")[0] for line in (tmp_path / "topk.txt").read_text(encoding="utf-8").splitlines()]
    assert top == [w for w, _ in sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:15]]
    assert "1. and" in job.stdout and "words=71040" in job.stdout


@pytest.fixture(scope="module")
def newsgroups(tmp_path_factory) -> Path:
    """The 20 Newsgroups "bydate" corpus unpacked: 18,846 latin-1 files in 40 folders."""
    where = tmp_path_factory.mktemp("20news")
    with tarfile.open(SHARED / "20newsgroups" / "20news-bydate.tar.gz") as tar:
        tar.extractall(where, filter="data")
    return where


@pytest.mark.parametrize("workers", [2, 4])
def test_every_file_of_20_newsgroups_counts_exactly(tmp_path, newsgroups, workers):
    files = sorted(p for p in newsgroups.rglob("*") if p.is_file())
    assert len(files) == 18846
    expected: Counter = Counter()
    for path in files:
        expected.update(WORD.findall(path.read_bytes().decode("latin-1").lower()))
    launch(ROOT / "configs" / "wordcount.json", workers=workers, servers=2, output=tmp_path, timeout=300,
           overrides=[f"params.input={newsgroups}", "params.encoding=latin-1"])
    got = {}
    for line in (tmp_path / "wordcount.txt").read_text(encoding="utf-8").splitlines():
        word, count = line.split("\t")
        got[word] = int(count)
    assert got == dict(expected)


REGEX_PATH = re.compile(f"(?:{WORD.pattern})")  # the default rule, spelt so that it is matched by re


def test_the_cpp_and_regex_paths_count_all_of_20_newsgroups_alike(newsgroups):
    texts = [p.read_bytes().decode("latin-1") for p in sorted(newsgroups.rglob("*")) if p.is_file()]
    expected: Counter = Counter()
    for text in texts:
        expected.update(WORD.findall(text.lower()))
    lines = [line for text in texts for line in text.splitlines()]
    words, counts = count_default_words(lines)
    assert dict(zip(words, counts.tolist())) == dict(expected)
    assert count_words(lines, token=REGEX_PATH) == expected


@pytest.mark.parametrize("lowercase", [True, False])
def test_the_cpp_path_follows_str_lower_and_the_regex(lowercase):
    # U+0130 lower-cases to "i" + a combining dot, U+212A (Kelvin) to "k"; other letters are no word
    lines = ["Don't STOP-me now", "x2 y22 ab'\u0130x \u212a'x don''t 'tis o'", "\u0130\u0130 a'\u0130", "",
             "rock'n'roll's '' caf\u00e9 na\u00efve \u0160KODA \u65e5\u672c don't \U0001d518x"]
    expected = Counter(w for line in lines for w in WORD.findall(line.lower() if lowercase else line))
    words, counts = count_default_words(lines, lowercase)
    assert dict(zip(words, counts.tolist())) == dict(expected)
    assert count_words(lines, lowercase=lowercase, token=REGEX_PATH) == expected
    assert count_words(lines, 4, lowercase=lowercase) == count_words(lines, 4, REGEX_PATH, lowercase)


def test_tokenisation_is_configurable():
    lines = ["Don't STOP-me now", "x2 y22"]
    assert count_words(lines) == Counter({"don't": 1, "stop": 1, "me": 1, "now": 1, "x": 1, "y": 1})
    assert count_words(lines, min_length=3, token=re.compile(r"\w+"), lowercase=False) == Counter(
        {"Don": 1, "STOP": 1, "now": 1, "y22": 1})

"""The default job: distributed word count equals a single-process count of the same text."""
from __future__ import annotations

from pathlib import Path

from paracel.algorithms.wordcount import count_words
from paracel import launch

ROOT = Path(__file__).resolve().parents[1]
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

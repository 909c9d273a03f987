"""Word count with top-k: Paracel's hello world."""
from __future__ import annotations

import re
from collections import Counter
from operator import itemgetter

import numpy as np

from paracel import paralg
from paracel._ext.text_kernels import count_default_words
from paracel.params import InputPath, PositiveInt

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def count_words(lines: list[str], min_length: int = 1, token: re.Pattern = WORD,
                lowercase: bool = True) -> Counter:
    """The words of ``lines`` and their counts: the matches of ``token`` (by default letters
    with inner apostrophes) in each line, lower-cased first unless ``lowercase`` is false,
    and at least ``min_length`` characters long."""
    words, counts = word_counts(lines, min_length, token, lowercase)
    return Counter(dict(zip(words, counts.tolist())))


def word_counts(texts: list[str], min_length: int = 1, token: re.Pattern = WORD,
                lowercase: bool = True) -> tuple[list[str], np.ndarray]:
    """``count_words`` as (distinct words, int64 counts): the default rule is counted in C++
    (``text_kernels``, over lines or whole texts alike), any other pattern by ``re`` over
    lines."""
    if token.pattern == WORD.pattern:
        words, counts = count_default_words(texts, lowercase)
    else:
        found = Counter(w for line in texts for w in token.findall(line.lower() if lowercase else line))
        words, counts = list(found), np.fromiter(found.values(), dtype=np.int64, count=len(found))
    if min_length > 1:
        keep = [len(w) >= min_length for w in words]
        words, counts = [w for w, k in zip(words, keep) if k], counts[np.array(keep, dtype=bool)]
    return words, counts


class WordCount(paralg):
    """Counts the words of text files across the workers and reports the most frequent.

    Each worker counts the words of its share of the lines and adds its counts to the
    parameter server in one batched update; after a barrier, worker 0 reads the top ``topk``
    words and every count, and writes them to ``wordcount.txt`` (``word<TAB>count``, most
    frequent first) and ``topk.txt`` in the output folder. Words are the matches of the
    regular expression ``token`` in each line (lower-cased unless ``lowercase`` is false) with
    at least ``min_length`` characters; files are read with ``encoding``.
    """

    def __init__(self, input: InputPath, topk: PositiveInt = 10, min_length: PositiveInt = 1,
                 token: str = WORD.pattern, lowercase: bool = True, encoding: str = "utf-8") -> None:
        self.input, self.topk, self.min_length = input, topk, min_length
        self.lowercase, self.encoding = lowercase, encoding
        try:
            self.token = re.compile(token)
        except re.error as exc:
            raise ValueError(f"params.token {token!r} is not a regular expression: {exc}") from None

    def solve(self) -> None:
        if self.token.pattern == WORD.pattern:  # no line objects: a line break is no letter
            share = self.paracel_load(self.input, fmt="text", encoding=self.encoding)
            texts, n_lines = share.texts, share.n_lines
        else:
            texts = self.paracel_load(self.input, fmt="lines", encoding=self.encoding).lines
            n_lines = len(texts)
        words, counts = word_counts(texts, self.min_length, self.token, self.lowercase)
        if words:
            self.paracel_bupdate_multi(words, counts.tolist())  # Python ints come back: fast to sort and print
        self.set_total_iters(1)
        self.iter_commit()
        self.sync()
        totals = self.allreduce(np.array([n_lines, counts.sum()], dtype=np.int64))
        self.log_metrics(1, lines=int(totals[0]), words=int(totals[1]))
        if self.get_worker_id() != 0:
            return
        top = self.paracel_read_topk(self.topk)
        pairs = sorted(self.paracel_readall().items(), key=itemgetter(0))
        pairs.sort(key=itemgetter(1), reverse=True)  # stable: ties stay alphabetical
        with open(self.output_dir / "wordcount.txt", "w", encoding="utf-8") as out:
            out.writelines(f"{word}\t{count}\n" for word, count in pairs)
        with open(self.output_dir / "topk.txt", "w", encoding="utf-8") as out:
            out.writelines(f"{word}\t{count}\n" for word, count in top)
        print(f"[wordcount] {int(totals[1])} words, {len(pairs)} distinct; top {self.topk}:", flush=True)
        for rank, (word, count) in enumerate(top, 1):
            print(f"[wordcount] {rank:3d}. {word:<12s} {count}", flush=True)

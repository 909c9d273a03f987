"""Latent Dirichlet allocation by collapsed Gibbs sampling on a parameter server (SSP).

Documents and their tokens' topic assignments stay on the workers; the word-topic counts (one
int32 row of K per word id) and the topic totals (key -1) live on the servers, words spread by
the ring. A sweep: a worker pulls the rows of the words it holds and the totals, samples every
one of its tokens against those copies (Cython, ``lda_kernels``, SparseLDA buckets), pushes
the change of each row (``paracel_bupdate_multi`` with ``add``) and ends its clock; under
staleness s it may start the next sweep with counts up to s sweeps old (SSP).

Inputs: a UCI docword file (``fmap`` by document), or plain text with one document per line,
tokenised by a regular expression, its vocabulary agreed by every worker through the servers.

Held-out evaluation, by document completion: documents whose id is a multiple of
``holdout_every`` take no part in training. The tokens of each are shuffled (seed 0 for
document 1, ... one generator per document id) and split in half; the topic mixture of the
document is inferred on the first half with the trained topics fixed (``infer_theta``: Gibbs,
averaged after a burn-in), and the perplexity is ``exp(-sum log p(w | theta, phi) / tokens)``
over the second half, with ``phi = (n_wk + beta) / (n_k + W beta)``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from mpi4py import MPI

from paracel import paralg
from paracel._ext import lda_kernels
from paracel.collectives import wait
from paracel.params import AtLeast, InputPath, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

TOTALS = -1  # the key of the topic totals; word ids are >= 1
VOCAB = "vocab:"  # str keys of the raw-text vocabulary: [occurrences, documents] per word
WORD = r"[a-z]+(?:'[a-z]+)*"


@dataclass
class Corpus:
    """This worker's documents as (doc id, word id, count) triples; ids are 1-based, word ids
    < ``n_words`` + 1; ``vocabulary`` names word id i + 1 (None for docword input)."""

    doc: np.ndarray
    word: np.ndarray
    count: np.ndarray
    n_words: int
    vocabulary: list[str] | None = None


class SweepLog:
    """A sweep's training log-likelihood, summed over the workers on worker 0 while the next
    sweep runs (a non-blocking reduce: logging costs the sweeps no barrier). The figure is
    the mean over training tokens of log p(w | the other tokens' topics), the predictive
    probability each token was sampled with."""

    def __init__(self, comm: MPI.Intracomm, sweep: int, loglik: float, tokens: int, seconds: float) -> None:
        self.sweep, self.seconds = sweep, seconds
        self._sums = np.zeros(2)
        self._request = comm.Ireduce(np.array([loglik, tokens], dtype=np.float64), self._sums, op=MPI.SUM, root=0)

    def log(self, alg: paralg) -> None:
        """Wait for the sum (without spinning); worker 0 logs it. Raises ``FloatingPointError``
        on worker 0 if it is not finite."""
        wait(self._request)
        if alg.get_worker_id() == 0:
            per_token = float(self._sums[0] / self._sums[1])
            if not np.isfinite(per_token):
                raise FloatingPointError(f"LDA log-likelihood is {per_token} after sweep {self.sweep}")
            alg.log_metrics(self.sweep, loglik_per_token=per_token, seconds=self.seconds)


def completion_split(doc_id: int, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A held-out document's tokens (word ids, one per occurrence) split at random in halves:
    (observed, evaluated). The same for a document whatever the worker count."""
    shuffled = np.random.default_rng(doc_id).permutation(words)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


def tokens_by_doc(doc: np.ndarray, word: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document ids, CSR offsets, token words): one token per occurrence, grouped by document
    (documents in id order, each document's triples in input order)."""
    order = np.argsort(doc, kind="stable")
    doc, word, count = doc[order], word[order], count[order]
    docs, first = np.unique(doc, return_index=True)
    ptr = np.append(0, np.add.reduceat(count, first).cumsum()) if len(doc) else np.zeros(1, np.int64)
    return docs, ptr.astype(np.int32), np.repeat(word, count).astype(np.int32)


class LDA(paralg):
    """LDA of a UCI docword file (``D``, ``W``, ``NNZ`` header lines, then ``doc word count``)
    or, with ``format="text"``, of text files holding one document per line (document id: the
    line's 1-based number over the input's files in sorted order; blank lines are no document).

    ``k``: topics; ``alpha``, ``beta``: symmetric Dirichlet priors of the document mixtures and
    of the topics; ``sweeps``: Gibbs sweeps (one clock each); ``holdout_every``: documents
    whose id is a multiple of it are held out (0: none); ``infer_sweeps``: Gibbs sweeps of the
    held-out inference (half burn-in); ``topwords``: words per topic written; ``seed``.
    Text only: words are the matches of ``token`` in each line (lower-cased first unless
    ``lowercase`` is false) of at least ``min_length`` characters; the vocabulary keeps the
    words seen at least ``min_count`` times in at most ``max_doc_fraction`` of the documents,
    with ids 1, 2, ... in sorted order. Logs the training log-likelihood per token every sweep;
    writes ``topics.txt`` (the top words of each topic, or word ids, worker 0),
    ``vocabulary.txt`` (text: ``id<TAB>word``), ``doc_topics_<w>.txt`` (``doc<TAB>mixture``)
    and ``summary.tsv`` (held-out perplexity). Raises ``FloatingPointError`` if the likelihood
    is not finite.
    """

    def __init__(self, input: InputPath, format: Literal["docword", "text"] = "docword", k: PositiveInt = 20,
                 alpha: PositiveFloat = 0.1, beta: PositiveFloat = 0.1, sweeps: PositiveInt = 80,
                 holdout_every: NonNegativeInt = 10, infer_sweeps: Annotated[int, AtLeast(2)] = 50,
                 topwords: PositiveInt = 10, seed: NonNegativeInt = 0, token: str = WORD,
                 lowercase: bool = True, min_length: PositiveInt = 1, min_count: PositiveInt = 1,
                 max_doc_fraction: UnitInterval = 1.0, encoding: str = "utf-8") -> None:
        self.input, self.format, self.k, self.alpha, self.beta = input, format, k, alpha, beta
        self.sweeps, self.holdout_every, self.infer_sweeps = sweeps, holdout_every, infer_sweeps
        self.topwords, self.seed = topwords, seed
        self.lowercase, self.min_length, self.min_count = lowercase, min_length, min_count
        self.max_doc_fraction, self.encoding = max_doc_fraction, encoding
        try:
            self.token = re.compile(token)
        except re.error as exc:
            raise ValueError(f"params.token {token!r} is not a regular expression: {exc}") from None
        self.perplexity = float("nan")
        self._saved: dict[str, Any] | None = None  # a checkpoint's state, in a resumed job
        self._live: dict[str, Any] = {}  # what a checkpoint takes: sweep, z, n_dk, rng

    def save_state(self) -> dict[str, Any]:
        """The sweeps done, this worker's topic assignments and document-topic counts, and its
        random generator."""
        live = self._live
        return {"sweep": live["sweep"], "z": live["z"], "n_dk": live["n_dk"], "rng": live["rng"].bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        self._saved = state

    def solve(self) -> None:
        corpus = self._load_text() if self.format == "text" else self._load_docword()
        held = corpus.doc % self.holdout_every == 0 if self.holdout_every else np.zeros(len(corpus.doc), bool)
        docs, doc_ptr, tok_word = tokens_by_doc(corpus.doc[~held], corpus.word[~held], corpus.count[~held])
        words, tok_word = np.unique(tok_word, return_inverse=True)
        tok_word = tok_word.astype(np.int32)
        rng = np.random.default_rng([self.seed, self.get_worker_id()])
        z = rng.integers(0, self.k, len(tok_word)).astype(np.int32)
        n_dk = np.zeros((len(docs), self.k), np.int32)
        np.add.at(n_dk, (np.repeat(np.arange(len(docs)), np.diff(doc_ptr)), z), 1)
        n_wk = np.zeros((len(words), self.k), np.int32)
        np.add.at(n_wk, (tok_word, z), 1)
        keys = np.append(words, TOTALS)
        first = 0
        if self._saved is not None:  # resumed: the servers hold the checkpoint's counts
            first, z, n_dk = self._saved["sweep"], self._saved["z"], self._saved["n_dk"]
            rng.bit_generator.state = self._saved["rng"]
        else:
            initial = np.vstack([n_wk, n_wk.sum(axis=0)]).astype(np.int32)
            every = keys
            if self.get_worker_id() == 0:  # zero rows for every word: any word can be read later
                absent = np.setdiff1d(np.arange(1, corpus.n_words + 1), words)
                every = np.append(keys, absent)
                initial = np.vstack([initial, np.zeros((len(absent), self.k), np.int32)])
            self.paracel_bupdate_multi(every, initial)  # "add" commutes: no write-then-add ordering needed
        self.sync()
        self._live = {"sweep": first, "z": z, "n_dk": n_dk, "rng": rng}

        self.set_total_iters(self.sweeps)
        start, wbeta = time.perf_counter(), corpus.n_words * self.beta
        logged: SweepLog | None = None
        for sweep in range(first, self.sweeps):
            pulled = self.paracel_read_multi(keys, as_array=True)
            counts = pulled.copy()  # the word rows, then the totals
            loglik = lda_kernels.gibbs_sweep(doc_ptr, tok_word, z, n_dk, counts[:-1], counts[-1], self.alpha,
                                             self.beta, wbeta, int(rng.integers(2**63)))
            delta = counts - pulled
            changed = delta.any(axis=1)
            self.paracel_bupdate_multi(keys[changed], delta[changed])
            self._live["sweep"] = sweep + 1
            self.iter_commit()  # may checkpoint: this sweep is done
            if logged is not None:
                logged.log(self)
            logged = SweepLog(self.worker_comm, sweep, loglik, len(tok_word), time.perf_counter() - start)
        if logged is not None:
            logged.log(self)
        self.sync()  # every sweep's counts are on the servers
        phi_all = self._phi(np.arange(1, corpus.n_words + 1), corpus.n_words)
        theta = (n_dk + self.alpha) / (n_dk.sum(axis=1, keepdims=True) + self.k * self.alpha)
        self.paracel_dump("doc_topics", dict(zip(docs.tolist(), theta)))
        if self.get_worker_id() == 0:
            self._write_topics(phi_all, corpus.vocabulary)
            if corpus.vocabulary is not None:
                (self.output_dir / "vocabulary.txt").write_text(
                    "".join(f"{i}\t{w}\n" for i, w in enumerate(corpus.vocabulary, 1)), encoding="utf-8")
        self._held_out(corpus.doc[held], corpus.word[held], corpus.count[held], phi_all)

    def _load_docword(self) -> Corpus:
        table = self.paracel_load(self.input, fmt="docword", shuffle="fmap")
        doc, word, count = (np.asarray(table[c], dtype=np.int64) for c in ("doc", "word", "count"))
        return Corpus(doc, word, count, int(table.info.meta["n_words"]))

    def _load_text(self) -> Corpus:
        """Collective: this worker's lines as documents, word ids from a vocabulary that every
        worker builds alike from the per-word totals summed on the servers."""
        lines = self.paracel_load(self.input, fmt="lines", encoding=self.encoding).lines
        first_line = sum(self.allgather(len(lines))[:self.get_worker_id()])
        per_doc = []
        for number, line in enumerate(lines, first_line + 1):
            found = self.token.findall(line.lower() if self.lowercase else line)
            found = [w for w in found if len(w) >= self.min_length]
            if found:
                words, counts = np.unique(np.array(found), return_counts=True)
                per_doc.append((number, words, counts))
        local_words, inverse = np.unique(np.concatenate([w for _, w, _ in per_doc] or [np.array([], str)]),
                                         return_inverse=True)
        all_counts = np.concatenate([c for _, _, c in per_doc] or [np.array([], np.int64)])
        totals = np.zeros((len(local_words), 2), np.int64)
        np.add.at(totals, (inverse, 0), all_counts)
        np.add.at(totals, (inverse, 1), 1)
        if len(local_words) and self._saved is None:  # resumed: the servers hold the sums
            self.paracel_bupdate_multi([VOCAB + w for w in local_words.tolist()], totals)
        n_docs = int(self.allreduce(np.array([len(per_doc)]))[0])
        self.sync()
        summed = self.paracel_read_prefix(VOCAB)
        limit = self.max_doc_fraction * n_docs
        vocabulary = sorted(w[len(VOCAB):] for w, (n, df) in summed.items() if n >= self.min_count and df <= limit)
        if not vocabulary:
            raise ValueError(f"{self.input}: no word is left in the vocabulary (params.token, min_length, "
                             "min_count, max_doc_fraction)")
        ids = {w: i for i, w in enumerate(vocabulary, 1)}
        word_id = np.array([ids.get(w, 0) for w in local_words.tolist()], np.int64)[inverse]
        doc = np.repeat([d for d, w, _ in per_doc], [len(w) for _, w, _ in per_doc]).astype(np.int64)
        keep = word_id > 0
        return Corpus(doc[keep], word_id[keep].astype(np.int64), all_counts[keep].astype(np.int64),
                      len(vocabulary), vocabulary)

    def _phi(self, word_ids: np.ndarray, n_words: int) -> np.ndarray:
        """Topics (len(word_ids) x K): p(word | topic) from the counts on the servers."""
        rows = self.paracel_read_multi(np.append(word_ids, TOTALS), as_array=True).astype(np.float64)
        return (rows[:-1] + self.beta) / (rows[-1] + n_words * self.beta)

    def _write_topics(self, phi: np.ndarray, vocabulary: list[str] | None) -> None:
        top = np.argsort(-phi, axis=0, kind="stable")[:self.topwords].T  # word id - 1
        names = np.asarray(vocabulary) if vocabulary is not None else np.arange(1, len(phi) + 1).astype(str)
        with open(self.output_dir / "topics.txt", "w", encoding="utf-8") as out:
            out.writelines(f"{t}\t{' '.join(names[row])}\n" for t, row in enumerate(top))

    def _held_out(self, doc_ids: np.ndarray, word_ids: np.ndarray, counts: np.ndarray,
                  phi: np.ndarray) -> None:
        """Collective: the held-out perplexity by document completion (module docstring)."""
        docs, doc_ptr, tokens = tokens_by_doc(doc_ids, word_ids, counts)
        splits = [completion_split(doc, tokens[doc_ptr[d]:doc_ptr[d + 1]]) for d, doc in enumerate(docs.tolist())]
        loglik, n_scored = 0.0, 0
        if splits:
            seen_ptr, scored_ptr = (np.append(0, np.cumsum([len(s[i]) for s in splits])).astype(np.int32) for i in (0, 1))
            seen, scored = ((np.concatenate([s[i] for s in splits]) - 1).astype(np.int32) for i in (0, 1))
            theta = lda_kernels.infer_theta(seen_ptr, seen, phi, self.alpha, self.infer_sweeps,
                                            self.infer_sweeps // 2, self.seed + 1)
            loglik, n_scored = lda_kernels.token_loglik(scored_ptr, scored, theta, phi), len(scored)
        total = self.allreduce(np.array([loglik, n_scored]))
        self.perplexity = float(np.exp(-total[0] / total[1])) if total[1] else float("nan")
        if self.get_worker_id() == 0:
            self.log_metrics(self.sweeps, heldout_perplexity=self.perplexity, heldout_tokens=int(total[1]))
            (self.output_dir / "summary.tsv").write_text(
                f"heldout_perplexity\t{self.perplexity:.6f}\nheldout_tokens\t{int(total[1])}\n")

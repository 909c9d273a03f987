"""Latent Dirichlet allocation by collapsed Gibbs sampling on a parameter server (SSP).

Documents and their tokens' topic assignments stay on the workers (``fmap`` by document); the
word-topic counts (one int32 row of K per word id) and the topic totals (key -1) live on the
servers, words spread by the ring. A sweep: a worker pulls the rows of the words it holds and
the totals, samples every one of its tokens against those copies (Cython, ``lda_kernels``),
pushes the change of each row (``paracel_bupdate_multi`` with ``add``) and ends its clock;
under staleness s it may start the next sweep with counts up to s sweeps old (SSP).

Held-out evaluation, by document completion: documents whose id is a multiple of
``holdout_every`` take no part in training. The tokens of each are shuffled (seed 0 for
document 1, ... one generator per document id) and split in half; the topic mixture of the
document is inferred on the first half with the trained topics fixed (``infer_theta``: Gibbs,
averaged after a burn-in), and the perplexity is ``exp(-sum log p(w | theta, phi) / tokens)``
over the second half, with ``phi = (n_wk + beta) / (n_k + W beta)``.
"""
from __future__ import annotations

import time
from typing import Annotated

import numpy as np

from paracel import paralg
from paracel._ext import lda_kernels
from paracel.params import AtLeast, InputPath, NonNegativeInt, PositiveFloat, PositiveInt

TOTALS = -1  # the key of the topic totals; word ids are >= 1


def completion_split(doc_id: int, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A held-out document's tokens (word ids, one per occurrence) split at random in halves:
    (observed, evaluated). The same for a document whatever the worker count."""
    shuffled = np.random.default_rng(doc_id).permutation(words)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


class LDA(paralg):
    """LDA of a UCI docword file (``D``, ``W``, ``NNZ`` header lines, then ``doc word count``).

    ``k``: topics; ``alpha``, ``beta``: symmetric Dirichlet priors of the document mixtures and
    of the topics; ``sweeps``: Gibbs sweeps (one clock each); ``holdout_every``: documents
    whose id is a multiple of it are held out (0: none); ``infer_sweeps``: Gibbs sweeps of the
    held-out inference (half burn-in); ``topwords``: words per topic written; ``seed``.
    Logs the training log-likelihood per token every sweep; writes ``topics.txt`` (the top word
    ids of each topic, worker 0), ``doc_topics_<w>.txt`` (``doc<TAB>mixture``) and
    ``summary.tsv`` (held-out perplexity). Raises ``FloatingPointError`` if the likelihood is
    not finite.
    """

    def __init__(self, input: InputPath, k: PositiveInt = 20, alpha: PositiveFloat = 0.1,
                 beta: PositiveFloat = 0.01, sweeps: PositiveInt = 200, holdout_every: NonNegativeInt = 10,
                 infer_sweeps: Annotated[int, AtLeast(2)] = 100, topwords: PositiveInt = 10,
                 seed: NonNegativeInt = 0) -> None:
        self.input, self.k, self.alpha, self.beta = input, k, alpha, beta
        self.sweeps, self.holdout_every, self.infer_sweeps = sweeps, holdout_every, infer_sweeps
        self.topwords, self.seed = topwords, seed
        self.perplexity = float("nan")
        self.history: list[float] = []

    def solve(self) -> None:
        table = self.paracel_load(self.input, fmt="docword", shuffle="fmap")
        n_words = int(table.info.meta["n_words"])
        doc_ids, word_ids, counts = (np.asarray(table[c], dtype=np.int64) for c in ("doc", "word", "count"))
        held = (doc_ids % self.holdout_every == 0) if self.holdout_every else np.zeros(len(doc_ids), bool)
        docs, doc_row = np.unique(doc_ids[~held], return_inverse=True)
        words, word_row = np.unique(word_ids[~held], return_inverse=True)
        # one token per occurrence
        tok_doc = np.repeat(doc_row, counts[~held]).astype(np.int32)
        tok_word = np.repeat(word_row, counts[~held]).astype(np.int32)
        rng = np.random.default_rng([self.seed, self.get_worker_id()])
        z = rng.integers(0, self.k, len(tok_doc)).astype(np.int32)
        n_dk = np.zeros((len(docs), self.k), np.int32)
        np.add.at(n_dk, (tok_doc, z), 1)
        mine = np.zeros((len(words), self.k), np.int32)
        np.add.at(mine, (tok_word, z), 1)
        keys = np.append(words, TOTALS)
        if self.get_worker_id() == 0:  # every word has a row, so any word can be read later
            self.paracel_write_multi(np.append(np.arange(1, n_words + 1), TOTALS),
                                     np.zeros((n_words + 1, self.k), np.int32))
        self.sync()
        self.paracel_bupdate_multi(keys, np.vstack([mine, mine.sum(axis=0)]).astype(np.int32))
        self.sync()

        self.set_total_iters(self.sweeps)
        start, wbeta = time.perf_counter(), n_words * self.beta
        for sweep in range(self.sweeps):
            pulled = self.paracel_read_multi(keys, as_array=True)
            n_wk, n_k = pulled[:-1].copy(), pulled[-1].copy()
            lda_kernels.gibbs_sweep(tok_doc, tok_word, z, n_dk, n_wk, n_k, self.alpha, self.beta, wbeta,
                                    int(rng.integers(2**63)))
            delta = np.vstack([n_wk, n_k]) - pulled
            self.paracel_bupdate_multi(keys, delta)
            self.iter_commit()
            self._log_sweep(sweep, tok_doc, tok_word, n_dk, n_wk, n_k, wbeta, start)
        self.sync()  # every sweep's counts are on the servers
        phi_all = self._phi(np.arange(1, n_words + 1), n_words)
        theta = (n_dk + self.alpha) / (n_dk.sum(axis=1, keepdims=True) + self.k * self.alpha)
        self.paracel_dump("doc_topics", dict(zip(docs.tolist(), theta)))
        if self.get_worker_id() == 0:
            self._write_topics(phi_all)
        self._held_out(doc_ids[held], word_ids[held], counts[held], phi_all)

    def _phi(self, word_ids: np.ndarray, n_words: int) -> np.ndarray:
        """Topics (len(word_ids) x K): p(word | topic) from the counts on the servers."""
        rows = self.paracel_read_multi(np.append(word_ids, TOTALS), as_array=True).astype(np.float64)
        return (rows[:-1] + self.beta) / (rows[-1] + n_words * self.beta)

    def _log_sweep(self, sweep: int, tok_doc: np.ndarray, tok_word: np.ndarray, n_dk: np.ndarray,
                   n_wk: np.ndarray, n_k: np.ndarray, wbeta: float, start: float) -> None:
        """Collective: log the training log-likelihood per token, log p(w | theta, phi)."""
        theta = (n_dk + self.alpha) / (n_dk.sum(axis=1, keepdims=True) + self.k * self.alpha)
        phi = (np.maximum(n_wk, 0) + self.beta) / (np.maximum(n_k, 0) + wbeta)
        sums = self.allreduce(np.array([lda_kernels.token_loglik(tok_doc, tok_word, theta, phi), len(tok_doc)]))
        per_token = float(sums[0] / sums[1])
        if not np.isfinite(per_token):
            raise FloatingPointError(f"LDA log-likelihood is {per_token} after sweep {sweep}")
        self.history.append(per_token)
        if self.get_worker_id() == 0:
            self.log_metrics(sweep, loglik_per_token=per_token, seconds=time.perf_counter() - start)

    def _write_topics(self, phi: np.ndarray) -> None:
        top = np.argsort(-phi, axis=0, kind="stable")[:self.topwords].T + 1  # word ids are 1-based
        with open(self.output_dir / "topics.txt", "w", encoding="utf-8") as out:
            out.writelines(f"{t}\t{' '.join(map(str, row))}\n" for t, row in enumerate(top.tolist()))

    def _held_out(self, doc_ids: np.ndarray, word_ids: np.ndarray, counts: np.ndarray,
                  phi: np.ndarray) -> None:
        """Collective: the held-out perplexity by document completion (module docstring)."""
        docs = np.unique(doc_ids)
        observed, evaluated = [], []
        for d, doc in enumerate(docs.tolist()):
            at = doc_ids == doc
            seen, scored = completion_split(doc, np.repeat(word_ids[at], counts[at]))
            observed.append((np.full(len(seen), d, np.int32), (seen - 1).astype(np.int32)))
            evaluated.append((np.full(len(scored), d, np.int32), (scored - 1).astype(np.int32)))
        loglik, tokens = 0.0, 0
        if len(docs):
            obs_doc, obs_word = (np.concatenate(parts) for parts in zip(*observed))
            theta = lda_kernels.infer_theta(obs_doc, obs_word, phi, len(docs), self.alpha, self.infer_sweeps,
                                            self.infer_sweeps // 2, self.seed + 1)
            ev_doc, ev_word = (np.concatenate(parts) for parts in zip(*evaluated))
            loglik, tokens = lda_kernels.token_loglik(ev_doc, ev_word, theta, phi), len(ev_doc)
        total = self.allreduce(np.array([loglik, tokens]))
        self.perplexity = float(np.exp(-total[0] / total[1])) if total[1] else float("nan")
        if self.get_worker_id() == 0:
            self.log_metrics(self.sweeps, heldout_perplexity=self.perplexity, heldout_tokens=int(total[1]))
            (self.output_dir / "summary.tsv").write_text(
                f"heldout_perplexity\t{self.perplexity:.6f}\nheldout_tokens\t{int(total[1])}\n")

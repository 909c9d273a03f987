"""Logistic regression on the parameter server: Paracel's four methods (dgd, ipm, downpour, agd).

The model is ``n_features`` weights and an intercept (index ``n_features``), stored on the
servers in blocks of ``block_size`` float64s, one int key per block, so a large feature space
spreads over the servers and a mini-batch pulls only the blocks its features fall in.

The synchronous methods (``dgd``, ``agd``, ``ipm``) need staleness 0 and are exact BSP with one
clock per round: the model is double-buffered by round parity. In round c every worker reads
x_c from buffer ``c % 2``, proposes a next model ``z_w`` from its shard (a gradient step, a
Nesterov step or an SGD epoch) and adds ``f_w (z_w - x_{c-1})`` to the other buffer, which
holds x_{c-1}; with weights ``f_w = n_w / N`` the buffer becomes ``x_{c+1} = sum_w f_w z_w``.
A fast worker's next-round deltas go to the buffer nobody reads in this round, so no read
sees part of a later round. ``downpour`` is asynchronous mini-batch SGD under the job's SSP
staleness (Dean et al.'s Downpour with n_fetch = n_push = ``commit_every`` mini-batches): each
clock a worker pulls the blocks its next ``commit_every`` mini-batches touch (one batched read,
served from the SSP cache while fresh enough), runs those mini-batches on its copy, pushes the
change as one ``add`` delta (the servers apply every delta: no update is lost) and commits.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel._ext import lr_kernels
from paracel.metrics import write_summary
from paracel.params import InputPath, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

Method = Literal["dgd", "ipm", "downpour", "agd"]
SYNCHRONOUS = ("dgd", "agd", "ipm")


@dataclass
class Samples:
    """Labelled rows: ``X`` CSR (n, n_features) with int32 indices, ``labels`` (n,) in {0, 1}."""

    X: sp.csr_matrix
    labels: np.ndarray

    def __len__(self) -> int:
        return self.X.shape[0]

    def loss_grad(self, w: np.ndarray, bias: int, grad: np.ndarray) -> float:
        """Summed logistic loss at ``w``; the summed gradient written into ``grad``."""
        return lr_kernels.loss_grad(self.X.indptr, self.X.indices, self.X.data, self.labels, w, bias, grad)

    def margins(self, w: np.ndarray) -> np.ndarray:
        """``X w[:d] + w[d]`` for a model of ``d = n_features`` weights and the intercept."""
        d = self.X.shape[1]
        return self.X @ w[:d] + w[d]

    def accuracy(self, w: np.ndarray) -> float:
        """Fraction of rows whose predicted class (margin > 0) is their label (NaN if empty)."""
        return float(np.mean((self.margins(w) > 0) == (self.labels > 0.5))) if len(self) else float("nan")


@dataclass
class Chunk:
    """Rows over the model blocks they touch: ``keys`` of those blocks and the rows with
    column indices into their concatenation (``bias``: the intercept's position there)."""

    keys: np.ndarray
    rows: Samples
    bias: int


def _samples(X: sp.csr_matrix, y: np.ndarray) -> Samples:
    X = sp.csr_matrix(X, dtype=np.float64)
    X.indices = X.indices.astype(np.int32, copy=False)
    return Samples(X, (np.asarray(y) > 0).astype(np.float64))


class LogisticRegression(paralg):
    """Binary logistic regression with L2 regularisation, trained by ``method``.

    Minimises ``mean_i log(1 + exp(-s_i (x_i . w + b))) + reg / 2 |w|^2`` (s_i = +1 for a label
    > 0, else -1; the intercept b is not regularised). ``fmt``: ``libsvm`` (``label idx:val``)
    or ``csv`` (``f1,...,fk,label``, needs ``n_features`` = k). The learning rate of round t is
    ``learning_rate * decay**t``; gradients are means over all samples, so the step does not
    depend on the data size. ``batch_size``: SGD mini-batch (ipm, downpour); ``commit_every``:
    mini-batches per clock (downpour). Writes ``model_0.txt`` (``feature<TAB>weight``, 0-based,
    then ``bias``), ``summary.tsv`` (train loss over every worker, test accuracy, training
    seconds), ``predictions_<w>.tsv`` for ``predict_input`` (``label<TAB>probability<TAB>class``,
    label and class 1 for positive, else 0) and one metrics row per round. Raises
    FloatingPointError if the loss or the model stops being finite (e.g. a learning rate far
    too large), ValueError for a synchronous method under staleness other than 0.
    """

    def __init__(self, train: InputPath, test: InputPath | None = None, predict_input: InputPath | None = None,
                 fmt: Literal["libsvm", "csv"] = "libsvm", n_features: PositiveInt | None = None,
                 method: Method = "dgd", rounds: PositiveInt = 100, learning_rate: PositiveFloat = 2.0,
                 decay: UnitInterval = 1.0, reg: NonNegativeFloat = 0.0, batch_size: PositiveInt = 1,
                 commit_every: PositiveInt = 16, block_size: PositiveInt = 1024, seed: NonNegativeInt = 0) -> None:
        super().__init__()
        if fmt == "csv" and n_features is None:
            raise ValueError("fmt 'csv' needs n_features (the number of feature columns before the label)")
        if method not in ("dgd", "ipm", "downpour", "agd"):
            raise ValueError(f"method must be dgd, ipm, downpour or agd, got {method!r}")
        self.train, self.test, self.predict_input = train, test, predict_input
        self.fmt, self.n_features, self.method = fmt, n_features, method
        self.rounds, self.learning_rate, self.decay, self.reg = rounds, learning_rate, decay, reg
        self.batch_size, self.commit_every, self.block_size, self.seed = batch_size, commit_every, block_size, seed

    # -- data
    def _load(self, path: str, everything: bool = False) -> Samples:
        """This worker's share of ``path`` (every row with ``everything``) as Samples."""
        rows = self.paracel_load_labeled(path, self.fmt, self.n_features, everywhere=everything)
        return _samples(rows.X, rows.y)

    # -- the model on the servers
    def _keys(self, parity: int = 0) -> np.ndarray:
        return np.arange(self.n_blocks, dtype=np.int64) + parity * self.n_blocks

    def _pull(self, parity: int = 0) -> np.ndarray:
        """The whole model (padded to whole blocks) from buffer ``parity``."""
        return self.paracel_read_multi(self._keys(parity), as_array=True).reshape(-1).astype(np.float64)

    def _push(self, delta: np.ndarray, parity: int = 0) -> None:
        self.paracel_bupdate_multi(self._keys(parity), delta.reshape(self.n_blocks, self.block_size))

    def _penalty(self, w: np.ndarray) -> np.ndarray:
        """reg * w with the intercept and the padding left out."""
        g = self.reg * w
        g[self.n_features:] = 0.0
        return g

    def _objective(self, loss_sum: float, count: int, w: np.ndarray) -> float:
        w_feat = w[:self.n_features]
        value = loss_sum / max(count, 1) + 0.5 * self.reg * float(w_feat @ w_feat)
        if not np.isfinite(value):
            raise FloatingPointError(f"logistic loss became {value} on worker {self.get_worker_id()} "
                                     f"(method {self.method}, learning_rate {self.learning_rate}): lower the learning rate")
        return value

    # -- the job
    def solve(self) -> None:
        if self.method in SYNCHRONOUS and self.get_staleness() != 0:
            raise ValueError(f"method {self.method!r} is bulk-synchronous: run it with staleness 0, "
                             f"not {self.get_staleness()}")
        train = self._load(self.train)
        self.n_features = train.X.shape[1]
        test = self._load(self.test, everything=True) if self.test else None
        self.n_blocks = -(-(self.n_features + 1) // self.block_size)
        self.total = int(self.allreduce(np.array([len(train)]))[0])
        if self.total == 0:
            raise ValueError(f"no training samples in {self.train}")
        if self.get_worker_id() == 0:
            buffers = 2 if self.method in SYNCHRONOUS else 1
            self.paracel_write_multi(np.arange(buffers * self.n_blocks, dtype=np.int64),
                                     np.zeros((buffers * self.n_blocks, self.block_size)))
        self.sync()

        self._started = time.perf_counter()
        if self.method == "downpour":
            self._downpour(train, test)
        else:
            self._synchronous(train, test)
        self._finish(train, test, time.perf_counter() - self._started)

    def _log_round(self, step: int, loss: float, w: np.ndarray, test: Samples | None) -> None:
        if self.get_worker_id() == 0:
            row = {"loss": loss, "seconds": time.perf_counter() - self._started}
            if test is not None:
                row["test_accuracy"] = test.accuracy(w)
            self.log_metrics(step, **row)

    def _synchronous(self, train: Samples, test: Samples | None) -> None:
        """dgd, agd or ipm: ``rounds`` exact BSP rounds on the double-buffered model."""
        share = len(train) / self.total
        propose = {"dgd": self._gradient_step, "agd": self._nesterov_step, "ipm": self._sgd_epoch}[self.method]
        self.set_total_iters(self.rounds)
        rng = np.random.default_rng(self.seed + self.get_worker_id())
        previous = np.zeros(self.n_blocks * self.block_size)
        current = self._pull(0)
        for rnd in range(self.rounds):
            proposal, loss = propose(train, current, previous, rnd, self.learning_rate * self.decay ** rnd, rng)
            if len(train):
                self._push(share * (proposal - previous), (rnd + 1) % 2)
            previous = current
            self.iter_commit()
            current = self._pull((rnd + 1) % 2)  # at staleness 0: every worker's round rnd, nothing later
            self._log_round(rnd + 1, loss, current, test)

    def _gradient_step(self, train: Samples, x: np.ndarray, _prev: np.ndarray, _rnd: int, lr: float,
                       _rng: np.random.Generator) -> tuple[np.ndarray, float]:
        grad = np.zeros_like(x)
        loss = train.loss_grad(x, self.n_features, grad)
        return x - lr * (grad / max(len(train), 1) + self._penalty(x)), self._objective(loss, len(train), x)

    def _nesterov_step(self, train: Samples, x: np.ndarray, prev: np.ndarray, rnd: int, lr: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, float]:
        # y_c = x_c + c/(c+3) (x_c - x_{c-1}); x_{c+1} = y_c - lr grad(y_c) (Nesterov 1983)
        ahead = x + rnd / (rnd + 3) * (x - prev)
        return self._gradient_step(train, ahead, prev, rnd, lr, rng)

    def _sgd_epoch(self, train: Samples, x: np.ndarray, _prev: np.ndarray, _rnd: int, lr: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, float]:
        w = x.copy()
        order = rng.permutation(len(train)).astype(np.int64)
        loss = lr_kernels.sgd(train.X.indptr, train.X.indices, train.X.data, train.labels, order, w,
                              self.n_features, lr, self.reg, self.batch_size)
        return w, self._objective(loss, len(train), w)

    # -- downpour
    def _chunks(self, train: Samples, count: int, rng: np.random.Generator) -> list[Chunk]:
        """The shard in ``count`` random chunks (one per clock), each re-indexed onto the blocks
        its rows touch."""
        bias_block = self.n_features // self.block_size
        chunks = []
        for rows in np.array_split(rng.permutation(len(train)), count):
            X = train.X[rows]
            blocks = np.union1d(X.indices // self.block_size, [bias_block]).astype(np.int64)
            slot = np.zeros(self.n_blocks, np.int64)
            slot[blocks] = np.arange(len(blocks))
            local = slot[X.indices // self.block_size] * self.block_size + X.indices % self.block_size
            X = sp.csr_matrix((X.data, local.astype(np.int32), X.indptr), shape=(len(rows), len(blocks) * self.block_size))
            bias = int(slot[bias_block]) * self.block_size + self.n_features % self.block_size
            chunks.append(Chunk(blocks, Samples(X, train.labels[rows]), bias))
        return chunks

    def _downpour(self, train: Samples, test: Samples | None) -> None:
        """``rounds`` epochs of asynchronous mini-batch SGD through the servers."""
        rng = np.random.default_rng(self.seed + self.get_worker_id())
        # every worker commits the same number of clocks per round, however many rows it has
        most = int(self.allreduce(np.array([len(train)]), "max")[0])
        chunks = self._chunks(train, -(-most // (self.batch_size * self.commit_every)), rng)
        self.set_total_iters(self.rounds * len(chunks))  # a clock per chunk
        for rnd in range(self.rounds):
            lr = self.learning_rate * self.decay ** rnd
            loss = sum(self._downpour_clock(chunks[c], lr, rng) for c in rng.permutation(len(chunks)))
            w = self._pull()
            self._log_round(rnd + 1, self._objective(loss, len(train), w), w, test)

    def _downpour_clock(self, chunk: Chunk, lr: float, rng: np.random.Generator) -> float:
        """One clock: pull the blocks ``chunk`` touches, run its mini-batches on that copy, push
        the change as one ``add`` delta, commit. Returns the summed loss of its rows."""
        start = self.paracel_read_multi(chunk.keys, as_array=True).reshape(-1).astype(np.float64)
        w = start.copy()
        X = chunk.rows.X
        loss = lr_kernels.sgd(X.indptr, X.indices, X.data, chunk.rows.labels,
                              rng.permutation(len(chunk.rows)).astype(np.int64), w, chunk.bias, lr, self.reg,
                              self.batch_size)
        self.paracel_bupdate_multi(chunk.keys, (w - start).reshape(len(chunk.keys), self.block_size))
        self.iter_commit()
        return loss

    # -- results
    def _finish(self, train: Samples, test: Samples | None, seconds: float) -> None:
        """Score, check and write the final model."""
        self.sync()  # every update is applied: all workers now read the same final model
        w = self._pull(self.rounds % 2 if self.method in SYNCHRONOUS else 0)
        if not np.all(np.isfinite(w)):
            raise FloatingPointError(f"the model is not finite after {self.rounds} rounds: lower the learning rate")
        loss_sum, count = self.allreduce(np.array([train.loss_grad(w, self.n_features, np.zeros_like(w)),
                                                   float(len(train))]))
        self.train_loss = self._objective(loss_sum, int(count), w)
        self.test_accuracy = test.accuracy(w) if test is not None else float("nan")
        write_summary(self, train_loss=self.train_loss, test_accuracy=self.test_accuracy, seconds=seconds)
        if self.get_worker_id() == 0:
            model: dict[object, float] = dict(enumerate(w[:self.n_features].tolist()))
            model["bias"] = float(w[self.n_features])
            self.paracel_dump("model", model)
        if self.predict_input:
            self._predict(w)

    def _predict(self, w: np.ndarray) -> None:
        rows = self._load(self.predict_input)
        prob = 1.0 / (1.0 + np.exp(-rows.margins(w)))
        with open(self.output_dir / f"predictions_{self.get_worker_id()}.tsv", "w", encoding="utf-8") as out:
            for label, p in zip(rows.labels, prob):
                out.write(f"{label:g}\t{p:.9g}\t{int(p >= 0.5)}\n")

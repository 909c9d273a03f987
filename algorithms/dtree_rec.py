"""Decision-tree recommendation for cold start (Paracel's ``decision_tree_rec``).

Method (Paracel's factor tree, with the three-way answers of functional matrix factorisation,
Zhou, Yang & Zha, SIGIR 2011): the tree asks a new user about one item per level. A user's
answer to item i is *like* (rating >= ``like_threshold``), *dislike* (rated below it) or
*unknown* (not rated), and each node has one child per answer. Every node carries a profile:
the mean user vector x of the training users who reach it. Growing a node picks the unasked
item whose three-way split of the node's users leaves the least within-child scatter
sum_c sum_{u in c} |x_u - mean_c|^2 (Paracel's criterion), among items that put at least
``min_child`` users in both the like and the dislike child. That scatter only needs per-child
sums (count, sum of x, sum of |x|^2) for every candidate item, which add across workers, so a
level is one sum of those statistics over the workers (``allreduce`` in the paralg).
A new user answers the questions down to a leaf and is predicted r_uj = c_j + profile . y_j,
with the item vectors y_j and offsets c_j of the factor model (for biased MF:
x_u = [f_u, b_u], y_j = [f_j, 1], c_j = mu + b_j).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Callable

import numpy as np
import scipy.sparse as sp

from paracel import paralg
from paracel._ext.mf_kernels import solve_rows
from paracel.metrics import rmse
from paracel.params import AtLeast, InputPath, NonNegativeInt, PositiveFloat, PositiveInt

LIKE, DISLIKE, UNKNOWN = 0, 1, 2
Reduce = Callable[[np.ndarray], np.ndarray]


@dataclass
class Tree:
    """Nodes in breadth-first order; node 0 is the root."""

    item: np.ndarray      # (n,) question asked at the node, -1 at a leaf
    children: np.ndarray  # (n, 3) child per answer (LIKE, DISLIKE, UNKNOWN), -1 if none
    profile: np.ndarray   # (n, d) mean user vector of the node's training users
    size: np.ndarray      # (n,) training users at the node

    def route(self, ratings: sp.spmatrix, like_threshold: float) -> tuple[np.ndarray, sp.csr_matrix]:
        """Walk every row (user) of ``ratings`` down the tree.

        Returns the node where each user stops (a leaf, or a node whose child for the user's
        answer is empty) and a 0/1 matrix of the (user, item) ratings revealed as answers.
        """
        r = sp.csr_matrix(ratings)
        node = np.zeros(r.shape[0], dtype=np.int64)
        live = np.arange(r.shape[0])
        rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        while len(live):
            item = self.item[node[live]]
            live, item = live[item >= 0], item[item >= 0]
            ans = answers(r[live], item, like_threshold)
            told = ans != UNKNOWN
            rows.append(live[told])
            cols.append(item[told])
            nxt = self.children[node[live], ans]
            node[live[nxt >= 0]] = nxt[nxt >= 0]
            live = live[nxt >= 0]
        rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
        asked = sp.csr_matrix((np.ones(len(rows_)), (rows_, cols_)), shape=r.shape)
        return node, asked

    def predict(self, nodes: np.ndarray, items: np.ndarray, item_vectors: np.ndarray,
                item_offsets: np.ndarray) -> np.ndarray:
        """Predicted ratings ``c_j + profile[node] . y_j`` for (node, item) pairs."""
        return item_offsets[items] + np.einsum("nd,nd->n", self.profile[nodes], item_vectors[items])


def answers(ratings: sp.csr_matrix, items: np.ndarray, like_threshold: float) -> np.ndarray:
    """Answer of row t of ``ratings`` to item ``items[t]``: LIKE, DISLIKE or UNKNOWN."""
    value = np.asarray(ratings[np.arange(len(items)), items]).ravel() if len(items) else np.zeros(0)
    return np.where(value == 0, UNKNOWN, np.where(value >= like_threshold, LIKE, DISLIKE))


def features(x: np.ndarray) -> np.ndarray:
    """Per-user rows [1, x, |x|^2]: summed, they are a node's sufficient statistics."""
    return np.hstack([np.ones((len(x), 1)), x, np.sum(x * x, axis=1, keepdims=True)])


def scatter(stats: np.ndarray) -> np.ndarray:
    """sum |x - mean|^2 from stacked [count, sum x, sum |x|^2] rows (0 for empty groups)."""
    n, s, q = stats[..., 0], stats[..., 1:-1], stats[..., -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = q - np.sum(s * s, axis=-1) / n
    return np.where(n > 0, np.maximum(out, 0.0), 0.0)


def level_stats(like: sp.csr_matrix, dislike: sp.csr_matrix, feats: np.ndarray,
                node_of: np.ndarray, nodes: list[int]) -> np.ndarray:
    """This worker's statistics for one tree level: ``(len(nodes), 3, n_items + 1, d + 2)``.

    Slot [:, a, i] sums the features of the node's users who answer ``a`` to item i (the
    UNKNOWN slot is left 0: it is the node total minus the other two); slot [:, 0, -1]
    holds the node total.
    """
    out = np.zeros((len(nodes), 3, like.shape[1] + 1, feats.shape[1]))
    for t, node in enumerate(nodes):
        mine = np.flatnonzero(node_of == node)
        out[t, LIKE, :-1] = like[mine].T @ feats[mine]
        out[t, DISLIKE, :-1] = dislike[mine].T @ feats[mine]
        out[t, 0, -1] = feats[mine].sum(axis=0)
    return out


def best_split(stats: np.ndarray, asked: set[int], min_child: int) -> tuple[int, np.ndarray]:
    """Item of least child scatter for one node's summed stats, or -1 if no item qualifies.

    Returns the item and its (3, d + 2) child statistics; ties go to the smaller item id.
    """
    total = stats[0, -1]
    child = stats[:, :-1].copy()
    child[UNKNOWN] = total - child[LIKE] - child[DISLIKE]
    cost = scatter(child).sum(axis=0)
    ok = (child[LIKE, :, 0] >= min_child) & (child[DISLIKE, :, 0] >= min_child)
    ok[list(asked)] = False
    if not ok.any():
        return -1, np.zeros(0)
    item = int(np.flatnonzero(ok)[np.argmin(cost[ok])])
    if cost[item] >= scatter(total) * (1 - 1e-12):
        return -1, np.zeros(0)
    return item, child[:, item]


def grow_tree(x: np.ndarray, ratings: sp.spmatrix, depth: int, like_threshold: float = 4.0,
              min_child: int = 10, reduce: Reduce = lambda a: a) -> Tree:
    """Grow the tree level by level over this worker's training users.

    ``x`` holds the vectors of this worker's users, row-aligned with ``ratings`` (users x
    items). ``reduce`` sums a statistics array across workers (identity for one process);
    every choice is made from reduced values, so all workers grow the same tree.
    """
    r = sp.csr_matrix(ratings, dtype=np.float64)
    like = sp.csr_matrix((r >= like_threshold).astype(np.float64))
    dislike = sp.csr_matrix(((r > 0) - (r >= like_threshold)).astype(np.float64))
    feats = features(np.asarray(x, dtype=np.float64))
    node_of = np.zeros(len(feats), dtype=np.int64)
    root = reduce(feats.sum(axis=0, keepdims=True))[0]
    item, children, stat, path = [-1], [[-1, -1, -1]], [root], [frozenset()]
    level = [0]
    for _ in range(depth):
        stats = reduce(level_stats(like, dislike, feats, node_of, level))
        nxt = []
        for t, node in enumerate(level):
            chosen, child_stats = best_split(stats[t], set(path[node]), min_child)
            if chosen < 0:
                continue
            item[node] = chosen
            for a in (LIKE, DISLIKE, UNKNOWN):
                if child_stats[a, 0] == 0:
                    continue
                children[node][a] = len(item)
                item.append(-1)
                children.append([-1, -1, -1])
                stat.append(child_stats[a])
                path.append(path[node] | {chosen})
                nxt.append(children[node][a])
        if not nxt:
            break
        moving = np.flatnonzero(np.isin(node_of, level) & (np.asarray(item)[node_of] >= 0))
        asked = np.asarray(item)[node_of[moving]]
        ans = answers(r[moving], asked, like_threshold)
        node_of[moving] = np.asarray(children)[node_of[moving], ans]
        level = nxt
    stat_arr = np.asarray(stat)
    return Tree(np.asarray(item, dtype=np.int64), np.asarray(children, dtype=np.int64),
                stat_arr[:, 1:-1] / stat_arr[:, :1], stat_arr[:, 0].astype(np.int64))


def fit_factors(ratings: sp.spmatrix, users: np.ndarray, rank: int, lam: float, rounds: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Biased ALS (``mf_kernels.solve_rows``, as the ALS job uses) on the ratings of ``users``
    only. Returns (user rows, item rows, mu); a row is ``[f_0 .. f_{rank-1}, bias]``.
    """
    coo = sp.csr_matrix(ratings)[users].tocoo()
    rows, cols, vals = users[coo.row].astype(np.int32), coo.col.astype(np.int32), coo.data
    mu = float(vals.mean())
    n_users, n_items = ratings.shape
    v = np.hstack([np.random.default_rng(seed).normal(0, 0.1, (n_items, rank)), np.zeros((n_items, 1))])
    for _ in range(rounds):
        u = solve_rows(rows, cols, vals, v, n_users, mu, lam)
        v = solve_rows(cols, rows, vals, u, n_items, mu, lam)
    return u, v, mu


def evaluate(tree: Tree, ratings: sp.spmatrix, item_rows: np.ndarray, mu: float,
             like_threshold: float) -> np.ndarray:
    """Squared-error sums ``[tree, global mean, item baseline, count]`` for new users'
    ``ratings`` (rows), leaving out the ratings they revealed as answers."""
    node, asked = tree.route(ratings, like_threshold)
    coo = sp.csr_matrix(ratings).tocoo()
    unseen = np.asarray(asked[coo.row, coo.col]).ravel() == 0
    rows, cols, vals = coo.row[unseen], coo.col[unseen], coo.data[unseen]
    y = np.hstack([item_rows[:, :-1], np.ones((len(item_rows), 1))])
    offsets = mu + item_rows[:, -1]
    pred = tree.predict(node[rows], cols, y, offsets)
    return np.array([np.sum((pred - vals) ** 2), np.sum((mu - vals) ** 2),
                     np.sum((offsets[cols] - vals) ** 2), len(vals)])


class DTreeRec(paralg):
    """Cold-start decision tree over biased-ALS factors (see the module docstring).

    Users with id % ``holdout_every`` == 0 are the new users: they take no part in the factors
    or the tree and are scored at the end. Workers own users (``fmap``); each level's node
    statistics are summed over the workers. The factor fit is repeated on every worker (a
    stand-in for reading an ALS job's output). Writes ``tree.json`` (worker 0) and logs the
    held-out RMSE of the tree, the global mean and the item baseline.
    """

    def __init__(self, input: InputPath, holdout_every: Annotated[int, AtLeast(2)] = 5,
                 rank: PositiveInt = 10, lam: PositiveFloat = 0.1, als_rounds: PositiveInt = 10,
                 depth: NonNegativeInt = 3, like_threshold: float = 4.0, min_child: PositiveInt = 5,
                 seed: NonNegativeInt = 0) -> None:
        super().__init__()
        self.input, self.holdout_every, self.rank, self.lam = input, holdout_every, rank, lam
        self.als_rounds, self.depth, self.like_threshold = als_rounds, depth, like_threshold
        self.min_child, self.seed = min_child, seed
        self.rmse: dict[str, float] = {}

    def solve(self) -> None:
        ratings = self.paracel_load_ratings(self.input, by="user")
        mine, my_users = ratings.matrix(), np.unique(ratings.users)
        full = self.paracel_loadall_ratings(self.input).matrix(mine.shape)
        known = np.flatnonzero(full.getnnz(axis=1))
        train = known[known % self.holdout_every != 0]
        u_rows, i_rows, mu = fit_factors(full, train, self.rank, self.lam, self.als_rounds, self.seed)
        mine_train = my_users[my_users % self.holdout_every != 0]
        tree = grow_tree(u_rows[mine_train], mine[mine_train], self.depth, self.like_threshold,
                         self.min_child, reduce=self.allreduce)
        held = my_users[my_users % self.holdout_every == 0]
        sums = self.allreduce(evaluate(tree, mine[held], i_rows, mu, self.like_threshold))
        self.rmse = {name: rmse(sums[t], sums[3]) for t, name in
                     enumerate(("tree_rmse", "global_mean_rmse", "item_baseline_rmse"))}
        if self.get_worker_id() == 0:
            (self.output_dir / "tree.json").write_text(json.dumps(
                {"item": tree.item.tolist(), "children": tree.children.tolist(),
                 "size": tree.size.tolist(), "profile": tree.profile.tolist()}))
            self.log_metrics(0, **self.rmse, heldout_ratings=int(sums[3]))
